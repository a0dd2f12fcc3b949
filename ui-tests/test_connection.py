"""Honest connection state (issue 14, point 2): each way the link to a kernel breaks is shown, and a
cancel that gets no answer gives Stop back and offers "Interrupt kernel".

These tests run on a page of their own whose kernel websockets pass through Playwright's WebSocket
routing (``page.route_web_socket``), so a test can drop a socket or the messages it carries, as a
flaky network or a stuck kernel would; the session's main page is never routed. The panel's
``data-link`` attribute is logged by the page at every change (``window.__aigc.linkLog``) so that
short-lived states (a restart) are seen even when they last less than a poll.
"""

from __future__ import annotations

import re
import threading

import pytest
from aigc_ui_harness import KERNEL_TIMEOUT, STEP_TIMEOUT, Lab, open_lab

CHANNELS = re.compile(r".*/api/kernels/[^/]+/channels.*")
REQUEST_TIMEOUT_S = 10.0  # src/channel.ts REQUEST_TIMEOUT_MS

_JS_LINK_LOG = """() => {
  const panel = document.querySelector('#aigc-lab-panel');
  const log = window.__aigc.linkLog = [panel.getAttribute('data-link')];
  new MutationObserver(() => {
    const v = panel.getAttribute('data-link');
    if (log[log.length - 1] !== v) log.push(v);
  }).observe(panel, {attributes: true, attributeFilter: ['data-link']});
}"""


class Sockets:
    """Every kernel websocket of the routed page: forwarded as is, unless ``drop`` says otherwise."""

    def __init__(self) -> None:
        self.routes: list = []
        self.dropped: list[bytes] = []
        self.drop_cancels = threading.Event()

    def handle(self, ws) -> None:
        server = ws.connect_to_server()
        self.routes.append(ws)

        def from_page(message) -> None:
            data = message.encode() if isinstance(message, str) else message
            if self.drop_cancels.is_set() and b'"type":"cancel"' in data:
                self.dropped.append(data)  # the panel's cancel request never reaches the kernel
                return
            server.send(message)

        ws.on_message(from_page)

    def close_all(self, code: int) -> None:
        """Close every socket from the page's side. JupyterLab reconnects after a drop (1006, which a script
        cannot send; an application code such as 4000 is handled alike) and not after a deliberate close
        (1000, 1001)."""
        for ws in self.routes:
            ws.close(code=code, reason="test: connection closed")
        self.routes.clear()


@pytest.fixture(scope="module")
def routed(lab_server, browser_context):
    page = browser_context.new_page()
    sockets = Sockets()
    page.route_web_socket(CHANNELS, sockets.handle)
    lab = open_lab(page, lab_server)
    yield lab, sockets
    page.close()


def attached(lab: Lab, code: str = "import aigc_lab as al"):
    nb = lab.open_notebook()
    nb.execute(code)
    nb.wait_panel_follows()
    lab.wait_attr("#aigc-lab-panel", "data-link", "connected")
    lab.page.evaluate(_JS_LINK_LOG)
    return nb


def link_log(lab: Lab) -> list[str]:
    return lab.page.evaluate("() => window.__aigc.linkLog")


def status_line(lab: Lab) -> str:
    return lab.page.locator("#aigc-lab-panel .aigc-connection").inner_text()


def wait_logged(lab: Lab, state: str, timeout: float = STEP_TIMEOUT) -> None:
    """Wait until the page has logged the panel's ``data-link`` as ``state`` (however briefly it lasted)."""
    try:
        lab.page.wait_for_function("(s) => window.__aigc.linkLog.includes(s)", arg=state, timeout=timeout * 1000)
    except Exception:  # noqa: BLE001
        pytest.fail(f"the panel never showed {state!r}; it showed {link_log(lab)}")


def test_a_dropped_websocket_is_shown_and_the_panel_reconnects(routed):
    lab, sockets = routed
    nb = attached(lab)
    assert sockets.routes, "the notebook's kernel websocket did not go through the route"
    sockets.close_all(code=4000)  # a drop: JupyterLab retries at once
    wait_logged(lab, "websocket-lost")  # the close reaches the page asynchronously
    lab.wait_attr("#aigc-lab-panel", "data-link", "connected", timeout=KERNEL_TIMEOUT)
    log = link_log(lab)
    assert log.index("websocket-lost") < len(log) - 1 and log[-1] == "connected", log
    # live again: a new run streams into the panel
    run = nb.execute("s = al.generate(al.models.load('starter:gpt-tiny'), 'Hi', max_new_tokens=5).wait(); print(s.run)")
    lab.wait_run(run.stdout.strip(), "ok")


def test_a_closed_websocket_that_jupyterlab_will_not_reopen_says_how_to_reconnect(routed):
    lab, sockets = routed
    nb = attached(lab)
    sockets.close_all(code=1001)  # "going away": JupyterLab does not retry
    lab.wait_attr("#aigc-lab-panel", "data-link", "disconnected")  # (no retry: it stays, so no race here)
    assert "Reconnect to Kernel" in status_line(lab)
    lab.page.evaluate("(p) => window.__aigc.nbs[p].sessionContext.session.kernel.reconnect()", nb.path)
    lab.wait_attr("#aigc-lab-panel", "data-link", "connected", timeout=KERNEL_TIMEOUT)


def test_a_restart_is_shown_and_the_panel_waits_for_aigc_lab_again(routed):
    lab, _ = routed
    nb = attached(lab)
    nb.restart_kernel()
    wait_logged(lab, "restarting")
    lab.wait_attr("#aigc-lab-panel", "data-link", "waiting")
    assert "waiting for aigc_lab" in status_line(lab)
    nb.execute("import aigc_lab")
    lab.wait_attr("#aigc-lab-panel", "data-link", "connected")


def test_a_closed_comm_is_shown_and_connect_reopens_it(routed):
    lab, _ = routed
    nb = attached(lab)
    nb.execute("al.jupyter.disconnect()")
    lab.wait_attr("#aigc-lab-panel", "data-link", "comm-closed")
    assert "comm closed" in status_line(lab)
    nb.execute("al.jupyter.connect()")
    lab.wait_attr("#aigc-lab-panel", "data-link", "connected")


def test_an_unanswered_cancel_gives_stop_back_and_interrupt_stops_the_run(routed):
    lab, sockets = routed
    # a long foreground run: only a cancel request or a kernel interrupt ends it (a context of 50,000 positions:
    # the stock gpt-tiny's 1,024 fill in about 2 s on a fast machine, and the run ends on its own)
    nb = attached(lab, "import aigc_lab as al\nm = al.models.build_starter('starter:gpt-tiny', "
                       "al.data.samples.python_docs()[:200], n_positions=50_000)")
    nb.start("s = al.generate(m, 'Once', max_new_tokens=100_000, ignore_eos=True, cpu_kernel=False)\n"
             "for _ in s: pass")
    handle = lab.page.wait_for_function(
        """() => { const el = document.querySelector(
             '#aigc-lab-panel .aigc-run[data-kind="generate"][data-status="running"]');
           return el ? el.getAttribute('data-run-id') : false; }""", timeout=STEP_TIMEOUT * 1000)
    run_id = handle.json_value()
    card = lab.run_el(run_id)
    sockets.drop_cancels.set()
    try:
        card.locator("button.aigc-cancel").click()
        lab.page.wait_for_function(  # disabled while the request is on its way
            "(id) => document.querySelector(`#aigc-lab-panel .aigc-run[data-run-id=\"${id}\"] button.aigc-cancel`)"
            ".disabled", arg=run_id, timeout=STEP_TIMEOUT * 1000)
        # no answer within the request timeout: Stop is enabled again and the interrupt is offered
        card.locator("button.aigc-interrupt").wait_for(state="visible", timeout=(REQUEST_TIMEOUT_S + 10) * 1000)
        assert sockets.dropped, "the cancel request was not seen on the websocket"
        assert card.locator("button.aigc-cancel").is_enabled()
        assert lab.run_attrs(run_id)["data-status"] == "running"
        card.locator("button.aigc-interrupt").click()
        lab.wait_run(run_id, "cancelled")  # the kernel interrupt ends the run as cancelled
    finally:
        sockets.drop_cancels.clear()


def test_a_dead_kernel_is_shown(routed):
    """The server runs with ``KernelRestarter.restart_limit=0`` (conftest): a kernel that dies stays dead."""
    lab, _ = routed
    nb = attached(lab)
    nb.start("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    lab.wait_attr("#aigc-lab-panel", "data-link", "dead", timeout=KERNEL_TIMEOUT)
    assert "kernel dead" in status_line(lab)
    # (the server removes a dead kernel's session; the channel kept for it goes when the notebook gets another
    # kernel: src/__tests__/channel.spec.ts)
