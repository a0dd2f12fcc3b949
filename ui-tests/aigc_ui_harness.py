"""Real-browser UI tests for the aigc-lab JupyterLab panel: the harness (used by conftest.py).

One JupyterLab server (isolated config/settings/workspaces, a fresh root dir, no token) and one
headless Chromium (Debian's /usr/bin/chromium through Python Playwright) per test session.
Notebooks are written straight into the server's root dir, opened with ``docmanager:open`` and
driven through their own kernel connection (``kernel.requestExecute`` evaluated in the page), so
the panel, which follows the notebook's kernel, sees every comm message.

The panel is not forced open by the extension (the layout restorer shows it where the user left
it); ``open_lab`` and ``Lab.reload`` open it with its command (``aigc-lab:open``) unless told not to.

If the browser or the server cannot start, the tests FAIL with a message saying why; nothing here
skips.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# The pictures the README shows: written here (ignored by git) unless AIGC_UI_SCREENSHOTS names
# another folder (`make screenshots` points it at docs/ to refresh the committed ones).
SCREENSHOTS = Path(os.environ.get("AIGC_UI_SCREENSHOTS") or ARTIFACTS / "screenshots")
CHROMIUM = os.environ.get("AIGC_UI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 60.0
KERNEL_TIMEOUT = 60.0  # kernel start
STEP_TIMEOUT = 30.0  # everything else
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class BrowserStartError(RuntimeError):
    """The headless browser could not be started: the UI tests cannot run and must fail."""


class ServerStartError(RuntimeError):
    """The JupyterLab server did not come up."""


# ---------------------------------------------------------------------------------------------
# Browser


def launch_browser(pw: Any, executable_path: str = CHROMIUM, user_data_dir: str | None = None):
    """Start headless Chromium as a persistent context; raise ``BrowserStartError`` saying why not.

    Returns ``(context, user_data_dir)``.
    """
    exe = Path(executable_path)
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise BrowserStartError(
            f"Chromium not found or not executable at {executable_path!r}: the UI tests need it. "
            "Install it with `apt-get update && apt-get install -y chromium` "
            "(or point AIGC_UI_CHROMIUM at a Chromium binary)."
        )
    user_data_dir = user_data_dir or tempfile.mkdtemp(prefix="aigc-ui-chromium-")
    try:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=user_data_dir,
            executable_path=str(exe),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
            timeout=STEP_TIMEOUT * 1000,
        )
    except Exception as exc:  # noqa: BLE001 - re-raised with a clear message
        raise BrowserStartError(
            f"Chromium at {executable_path!r} failed to start: {type(exc).__name__}: {exc}"
        ) from exc
    return context, user_data_dir


# ---------------------------------------------------------------------------------------------
# Server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    url: str
    root_dir: Path
    log_path: Path
    proc: subprocess.Popen
    tmp: Path

    def log_tail(self, n: int = 80) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no server log: {exc})"
        return "\n".join(lines[-n:])

    def write_notebook(self, name: str, sources: list[str] | None = None) -> str:
        """Create a Python 3 notebook in the root dir (one code cell per source; default one empty
        cell); return its server path."""
        nb = {
            "cells": [{"cell_type": "code", "execution_count": None, "id": uuid.uuid4().hex[:8],
                       "metadata": {}, "outputs": [], "source": src} for src in (sources or [""])],
            "metadata": {
                "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                               "name": "python3"},
                "language_info": {"name": "python"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        (self.root_dir / name).write_text(json.dumps(nb))
        return name


def _status_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}api/status", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(extra_args: list[str] | None = None) -> LabServer:
    """Start an isolated JupyterLab server (``extra_args`` go on its command line)."""
    tmp = Path(tempfile.mkdtemp(prefix="aigc-ui-"))
    root = tmp / "root"
    settings = tmp / "lab-settings"
    for d in (root, tmp / "config", tmp / "data", tmp / "runtime", settings, tmp / "workspaces"):
        d.mkdir(parents=True, exist_ok=True)
    # No news / update pop-ups, no restart confirmation dialog.
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    (settings / "@jupyterlab" / "apputils-extension" / "sessionDialogs.jupyterlab-settings").write_text(
        json.dumps({"skipKernelRestartDialog": True})
    )
    port = free_port()
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
        # The kernel must import the aigc_lab of this checkout even if it is not pip-installed.
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        PATH=os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", ""))),
    )
    env.pop("JUPYTER_PATH", None)
    if os.environ.get("AIGC_UI_JUPYTER_PATH"):  # opt-in extra data dirs (e.g. an uninstalled build)
        env["JUPYTER_PATH"] = os.environ["AIGC_UI_JUPYTER_PATH"]
    cmd = [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0", "--allow-root",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
        *(extra_args or []),
    ]
    log_path = tmp / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    server = LabServer(url=url, root_dir=root, log_path=log_path, proc=proc, tmp=tmp)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"jupyter lab exited with {proc.returncode}:\n{server.log_tail()}")
        if _status_ok(url):
            return server
        time.sleep(0.1)
    stop_server(server)
    raise ServerStartError(
        f"jupyter lab did not answer {url}api/status within {SERVER_START_TIMEOUT:.0f}s:\n"
        f"{server.log_tail()}"
    )


def stop_server(server: LabServer) -> None:
    if server.proc.poll() is None:
        try:
            os.killpg(server.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(server.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.proc.wait(timeout=5)


# ---------------------------------------------------------------------------------------------
# In-page helpers

_JS_INSTALL = """
() => {
  if (window.__aigc) return;
  window.__aigc = { nbs: {} };
}
"""

_JS_OPEN = """
async ({path, timeout, busy}) => {
  const app = window.jupyterapp;
  const w = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  window.__aigc.nbs[path] = w;
  const t0 = Date.now();
  await w.context.ready;
  await w.sessionContext.ready;
  // wait for a kernel connection that is connected and idle (or, with busy, just connected: a
  // kernel running a cell answers shell requests only once the cell ends)
  for (;;) {
    const k = w.sessionContext.session && w.sessionContext.session.kernel;
    if (k && k.connectionStatus === 'connected' && busy) {
      return {id: w.id, kernelId: k.id};
    }
    if (k && k.connectionStatus === 'connected' && k.status === 'idle') break;
    if (Date.now() - t0 > timeout) {
      throw new Error('kernel of ' + path + ' not idle after ' + timeout + ' ms (status ' +
        (k ? k.status + '/' + k.connectionStatus : 'no kernel') + ')');
    }
    await new Promise(r => setTimeout(r, 25));
  }
  await w.sessionContext.session.kernel.requestKernelInfo();
  return {id: w.id, kernelId: w.sessionContext.session.kernel.id};
}
"""

_JS_EXEC = """
async ({path, code, timeout}) => {
  const w = window.__aigc.nbs[path];
  const kernel = w.sessionContext.session.kernel;
  const out = {stdout: '', stderr: '', error: null, result: null, status: null};
  const fut = kernel.requestExecute({code, stop_on_error: true, store_history: false});
  fut.onIOPub = (msg) => {
    const t = msg.header.msg_type, c = msg.content;
    if (t === 'stream') out[c.name === 'stderr' ? 'stderr' : 'stdout'] += c.text;
    else if (t === 'error') out.error = c.ename + ': ' + c.evalue + '\\n' + c.traceback.join('\\n');
    else if (t === 'execute_result') out.result = c.data['text/plain'];
  };
  let timer;
  const timedOut = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error('kernel execute timed out after ' + timeout + ' ms')),
                       timeout);
  });
  try {
    const reply = await Promise.race([fut.done, timedOut]);
    out.status = reply.content.status;
  } finally { clearTimeout(timer); }
  return out;
}
"""


_JS_WATCH = """
() => {
  const log = window.__aigc.runLog = {};
  const panel = document.querySelector('#aigc-lab-panel');
  const scan = () => {
    const t = Date.now();
    for (const el of panel.querySelectorAll('.aigc-run[data-run-id]')) {
      const e = {t, status: el.getAttribute('data-status'), t0: Number(el.getAttribute('data-t0') || 0),
                 tokens: Number(el.getAttribute('data-token-count') || 0),
                 steps: Number(el.getAttribute('data-step-count') || 0),
                 last: Number(el.getAttribute('data-last-step') || 0)};
      const l = log[el.getAttribute('data-run-id')] || (log[el.getAttribute('data-run-id')] = []);
      const p = l[l.length - 1];
      if (!p || p.status !== e.status || p.tokens !== e.tokens || p.steps !== e.steps) l.push(e);
    }
  };
  if (window.__aigc.watcher) window.__aigc.watcher.disconnect();
  window.__aigc.watcher = new MutationObserver(scan);
  window.__aigc.watcher.observe(panel, {subtree: true, childList: true, attributes: true,
    attributeFilter: ['data-run-id', 'data-status', 'data-token-count', 'data-step-count']});
  scan();
}
"""


@dataclass
class ExecResult:
    stdout: str
    stderr: str
    error: str | None
    result: str | None
    status: str

    def json_lines(self) -> list[dict]:
        """Every stdout line that parses as a JSON object."""
        out = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out


@dataclass
class Lab:
    """A JupyterLab page plus the server behind it."""

    page: Any
    server: LabServer = field(repr=False)
    console: list[tuple[str, str]] = field(default_factory=list, repr=False)

    # -- notebooks and kernels ---------------------------------------------------------------
    def open_notebook(self, name: str | None = None, sources: list[str] | None = None) -> Notebook:
        name = name or f"nb-{uuid.uuid4().hex[:8]}.ipynb"
        path = self.server.write_notebook(name, sources)
        self.page.evaluate(_JS_INSTALL)
        info = self.page.evaluate(_JS_OPEN, {"path": path, "timeout": KERNEL_TIMEOUT * 1000,
                                             "busy": False})
        return Notebook(lab=self, path=path, widget_id=info["id"])

    def reload(self, reset: bool = True, open_panel: bool = True) -> None:
        """Reload the page (same server, same kernels) and wait until JupyterLab is back. With
        ``reset`` the saved layout is dropped (``?reset``); with ``open_panel`` the panel is then
        opened with its command."""
        self.page.goto(f"{self.server.url}lab{'?reset' if reset else ''}",
                       wait_until="domcontentloaded", timeout=STEP_TIMEOUT * 1000)
        wait_lab_ready(self.page)
        self.page.evaluate(_JS_INSTALL)
        if open_panel:
            self.ensure_panel()

    def reopen(self, nb: Notebook, busy: bool = False) -> Notebook:
        """Open ``nb`` again in this page (after a reload: same session, same kernel). With
        ``busy``, do not wait for the kernel to be idle (it is running a cell)."""
        info = self.page.evaluate(_JS_OPEN, {"path": nb.path, "timeout": STEP_TIMEOUT * 1000,
                                             "busy": busy})
        return Notebook(lab=self, path=nb.path, widget_id=info["id"])

    # -- what the panel showed, and when ---------------------------------------------------------
    def watch_runs(self) -> None:
        """Start logging, in the page, every change of every run card's status / token count /
        step count with ``Date.now()`` (the host clock, which the kernel's ``t0`` also uses)."""
        self.page.evaluate(_JS_WATCH)

    def run_log(self) -> dict[str, list[dict]]:
        """Per run id: ``[{t, t0, status, tokens, steps, last}, ...]`` as logged since ``watch_runs``
        (``t0``: the run's start as the kernel stamped it, 0 while unknown)."""
        return self.page.evaluate("() => window.__aigc.runLog || {}")

    # -- the panel -----------------------------------------------------------------------------
    def panel(self):
        return self.page.locator("#aigc-lab-panel")

    def ensure_panel(self) -> None:
        """Make sure the aigc-lab panel is in the DOM and visible; fail clearly if the extension is missing."""
        loc = self.panel()
        if loc.count() and loc.is_visible():
            return
        has_cmd = self.page.evaluate("() => window.jupyterapp.commands.hasCommand('aigc-lab:open')")
        if not has_cmd:
            pytest.fail(
                "the aigc-lab frontend extension is not loaded in JupyterLab (no command "
                "'aigc-lab:open', no #aigc-lab-panel). Build and install it: "
                "`jupyter labextension develop --overwrite .` from the repo root; installed:\n"
                + _labextension_list()
            )
        self.page.evaluate("() => window.jupyterapp.commands.execute('aigc-lab:open')")
        try:
            loc.wait_for(state="visible", timeout=STEP_TIMEOUT * 1000)
        except Exception:  # noqa: BLE001
            pytest.fail("command 'aigc-lab:open' ran but #aigc-lab-panel did not become visible")

    def run_el(self, run_id: str):
        return self.page.locator(f'#aigc-lab-panel .aigc-run[data-run-id="{run_id}"]')

    def wait_attr(self, selector: str, attr: str, expected: str, timeout: float = STEP_TIMEOUT) -> None:
        """Wait until ``selector``'s attribute equals ``expected``; fail with the value seen."""
        try:
            self.page.wait_for_function(
                """([sel, attr, exp]) => {
                     const el = document.querySelector(sel);
                     return !!el && el.getAttribute(attr) === exp;
                   }""",
                arg=[selector, attr, expected],
                timeout=timeout * 1000,
            )
        except Exception:  # noqa: BLE001
            seen = self.page.evaluate(
                "([sel, attr]) => { const el = document.querySelector(sel);"
                " return el ? el.getAttribute(attr) : '<no element>'; }",
                [selector, attr],
            )
            pytest.fail(f"{selector} [{attr}] should become {expected!r} within {timeout:.0f}s, "
                        f"is {seen!r}")

    def wait_run(self, run_id: str, status: str, timeout: float = STEP_TIMEOUT) -> dict:
        """Wait for run ``run_id`` to be shown with ``data-status == status``; return its attributes."""
        sel = f'#aigc-lab-panel .aigc-run[data-run-id="{run_id}"]'
        self.wait_attr(sel, "data-status", status, timeout)
        return self.run_attrs(run_id)

    def run_attrs(self, run_id: str) -> dict:
        return self.page.evaluate(
            """(id) => {
                 const el = document.querySelector(`#aigc-lab-panel .aigc-run[data-run-id="${id}"]`);
                 if (!el) return null;
                 const attrs = {};
                 for (const a of el.attributes) attrs[a.name] = a.value;
                 const t = el.querySelector('.aigc-run-text');
                 attrs.text = t ? t.textContent : null;
                 attrs.visible = !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
                 return attrs;
               }""",
            run_id,
        )

    def next_frames(self, n: int = 2) -> None:
        """Wait until the page has fonts loaded and has painted ``n`` more animation frames."""
        self.page.evaluate(
            """async (n) => { await document.fonts.ready;
                 for (let k = 0; k < n; k++) await new Promise(r => requestAnimationFrame(r)); }""", n)

    def warnings(self, prefix: str = "") -> list[str]:
        return [text for kind, text in self.console if kind == "warning" and text.startswith(prefix)]


def wait_lab_ready(page: Any) -> None:
    """Wait until JupyterLab in ``page`` has started and restored its layout. JupyterLab may load
    the page once more on its own (a second tab on the same workspace is sent to a workspace of its
    own; a reset after the state was resolved reloads): that navigation is waited for, not failed on."""
    for attempt in range(3):
        try:
            page.wait_for_function("() => !!window.jupyterapp", timeout=STEP_TIMEOUT * 1000)
            page.evaluate("async () => { await window.jupyterapp.restored; }")
            return
        except Exception as exc:  # noqa: BLE001 - only a navigation is retried
            if "Execution context was destroyed" not in str(exc) or attempt == 2:
                raise
            page.wait_for_load_state("domcontentloaded", timeout=STEP_TIMEOUT * 1000)


def open_lab(page: Any, server: LabServer, open_panel: bool = True) -> Lab:
    """Load JupyterLab in ``page`` (console messages and page errors recorded), then open the
    panel with its command unless ``open_panel`` is false; fail with the reason."""
    console: list[tuple[str, str]] = []
    page.on("console", lambda m: console.append((m.type, m.text)))
    page.on("pageerror", lambda e: console.append(("pageerror", str(e))))
    page.goto(f"{server.url}lab?reset", wait_until="domcontentloaded", timeout=STEP_TIMEOUT * 1000)
    try:
        wait_lab_ready(page)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"JupyterLab did not load in the browser: {exc}\n{server.log_tail()}")
    page.evaluate(_JS_INSTALL)
    lab = Lab(page=page, server=server, console=console)
    if open_panel:
        lab.ensure_panel()
    return lab


@dataclass
class Notebook:
    lab: Lab = field(repr=False)
    path: str
    widget_id: str

    @property
    def kernel_id(self) -> str:
        return self.lab.page.evaluate(
            "(p) => window.__aigc.nbs[p].sessionContext.session.kernel.id", self.path
        )

    def activate(self) -> None:
        self.lab.page.evaluate("(id) => window.jupyterapp.shell.activateById(id)", self.widget_id)

    def execute(self, code: str, timeout: float = STEP_TIMEOUT, check: bool = True) -> ExecResult:
        """Run ``code`` in this notebook's kernel; fail with the traceback if it raises."""
        raw = self.lab.page.evaluate(
            _JS_EXEC, {"path": self.path, "code": code, "timeout": timeout * 1000}
        )
        res = ExecResult(
            stdout=raw["stdout"], stderr=raw["stderr"],
            error=ANSI.sub("", raw["error"]) if raw["error"] else None,
            result=raw["result"], status=raw["status"],
        )
        if check and (res.status != "ok" or res.error):
            pytest.fail(f"kernel code failed in {self.path}:\n{code}\n--- error ---\n{res.error}\n"
                        f"--- stderr ---\n{res.stderr}")
        return res

    def run_all(self) -> None:
        """Run ▸ Run All Cells (JupyterLab's own command) on this notebook; returns at once."""
        self.activate()
        self.lab.page.evaluate(
            """(p) => { const app = window.jupyterapp;
                        window.__aigc.runAll = window.__aigc.runAll || {};
                        window.__aigc.runAll[p] = app.commands.execute('notebook:run-all-cells'); }""",
            self.path)

    def wait_run_all(self, timeout: float) -> None:
        """Wait until the Run All started by ``run_all`` has executed every cell."""
        ok = self.lab.page.evaluate(
            """async ([p, timeout]) => {
                 let timer;
                 const late = new Promise((_, rej) => { timer = setTimeout(
                   () => rej(new Error('Run All not done after ' + timeout + ' ms')), timeout); });
                 try { return await Promise.race([window.__aigc.runAll[p], late]); }
                 finally { clearTimeout(timer); }
               }""", [self.path, timeout * 1000])
        assert ok is True, f"Run All of {self.path} reported {ok!r} (a cell failed?)"

    def start(self, code: str) -> None:
        """Send ``code`` to this notebook's kernel and return at once (``wait_started`` /
        ``wait_done`` follow it)."""
        self.lab.page.evaluate(
            """([p, code]) => {
                 const k = window.__aigc.nbs[p].sessionContext.session.kernel;
                 const f = k.requestExecute({code, store_history: false});
                 const r = window.__aigc.started = window.__aigc.started || {};
                 r[p] = {done: false, error: null};
                 f.onIOPub = (msg) => { if (msg.header.msg_type === 'error')
                   r[p].error = msg.content.ename + ': ' + msg.content.evalue; };
                 f.done.then(() => { r[p].done = true; }, (e) => { r[p].done = true;
                   r[p].error = String(e); });
               }""", [self.path, code])

    def wait_panel_follows(self, timeout: float = STEP_TIMEOUT) -> None:
        """Activate this notebook and wait until the panel follows its kernel."""
        self.activate()
        self.lab.ensure_panel()
        self.lab.wait_attr("#aigc-lab-panel", "data-kernel-id", self.kernel_id, timeout)

    def restart_kernel(self, timeout: float = KERNEL_TIMEOUT) -> None:
        self.lab.page.evaluate(
            """async ({path, timeout}) => {
                 const sc = window.__aigc.nbs[path].sessionContext;
                 await sc.restartKernel();
                 const t0 = Date.now();
                 for (;;) {
                   const k = sc.session && sc.session.kernel;
                   if (k && k.connectionStatus === 'connected' && k.status === 'idle') break;
                   if (Date.now() - t0 > timeout) throw new Error('kernel not idle after restart');
                   await new Promise(r => setTimeout(r, 25));
                 }
                 await sc.session.kernel.requestKernelInfo();
               }""",
            {"path": self.path, "timeout": timeout * 1000},
        )


@functools.lru_cache(maxsize=1)
def _labextension_list() -> str:
    try:
        return subprocess.run(
            [sys.executable, "-m", "jupyter", "labextension", "list"],
            capture_output=True, text=True, timeout=60,
        ).stderr
    except Exception as exc:  # noqa: BLE001
        return f"(jupyter labextension list failed: {exc})"


