"""The aigc-lab panel in a real browser, driven by real kernels (see conftest.py for the harness).

Run: ``cd /work/main && .venv/bin/python -m pytest ui-tests -v -s``
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from aigc_ui_harness import (
    ARTIFACTS,
    STEP_TIMEOUT,
    BrowserStartError,
    Lab,
    Notebook,
    launch_browser,
)

DOCS_PNG = Path(__file__).resolve().parent.parent / "docs" / "panel.png"
MALFORMED_PREFIX = "[aigc-lab] ignored malformed message"
STARTER = "starter:gpt-tiny"
MODEL_LOAD_TIMEOUT = 180.0


def _rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def fake_run_code(run: str, n: int, status: str = "ok") -> str:
    """Kernel code: RunStart, ``n`` tokens "<i>" as fast as possible, RunEnd; prints timings as JSON."""
    return f"""
import json as _json, time as _time
from aigc_lab import bus as _bus, events as _ev
_model = _ev.ModelInfo(name="fake", params=1, dtype="float32", quant=None, device="cpu")
_t0 = _time.time() * 1000
_bus.publish(_ev.RunStart(run={run!r}, kind="generate", model=_model, config={{"n": {n}}}, t0=_t0))
for _i in range({n}):
    _bus.publish(_ev.Token(run={run!r}, i=_i, id=_i, text=f"<{{_i}}>", ms=float(_i)))
_bus.publish(_ev.RunEnd(run={run!r}, status={status!r}, metrics=_ev.RunMetrics(tokens={n})))
_t1 = _time.time() * 1000
print(_json.dumps({{"t0": _t0, "t_published": _t1}}))
"""


def expected_text(n: int) -> str:
    return "".join(f"<{i}>" for i in range(n))


def connect(nb: Notebook) -> None:
    """Make the panel follow ``nb``, import aigc_lab there (opens the comm) and wait for the hello."""
    nb.wait_panel_follows()
    nb.execute("import aigc_lab")
    nb.lab.wait_attr("#aigc-lab-panel", "data-connected", "true")


def shown(lab: Lab, run: str) -> bool:
    attrs = lab.run_attrs(run)
    return bool(attrs and attrs["visible"])


def assert_fake_run(lab: Lab, run: str, n: int) -> dict:
    attrs = lab.wait_run(run, "ok")
    assert attrs["data-kind"] == "generate", attrs
    assert attrs["data-token-count"] == str(n), {k: v for k, v in attrs.items() if k != "text"}
    assert attrs["data-dups"] == "0" and attrs["data-gaps"] == "0", {
        k: v for k, v in attrs.items() if k != "text"}
    assert attrs["text"] == expected_text(n), (
        f"run text differs: {len(attrs['text'] or '')} chars shown, {len(expected_text(n))} expected")
    return attrs


# ---------------------------------------------------------------------------------------------
# 7 (first: needs no server). The harness fails loudly when the browser cannot start.


def test_browser_start_failure_is_loud(pw, tmp_path):
    bogus = str(tmp_path / "no-such-chromium")
    with pytest.raises(BrowserStartError, match="no-such-chromium"):
        launch_browser(pw, executable_path=bogus)
    # An existing file that is not a browser must fail too, with the launch error attached.
    fake = tmp_path / "fake-chromium"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrowserStartError, match="failed to start"):
        launch_browser(pw, executable_path=str(fake), user_data_dir=str(tmp_path / "profile"))


# ---------------------------------------------------------------------------------------------
# Harness self-check against plain JupyterLab (no extension needed).


def test_harness_kernel_roundtrip(lab):
    nb = lab.open_notebook()
    res = nb.execute("import os, json; print(json.dumps({'pid': os.getpid(), 'x': 6 * 7}))")
    data = res.json_lines()
    assert data and data[0]["x"] == 42, res
    assert nb.kernel_id, "notebook has no kernel id"
    failed = nb.execute("1/0", check=False)
    assert failed.status == "error" and "ZeroDivisionError" in (failed.error or ""), failed


# ---------------------------------------------------------------------------------------------
# 1. 2,000 tokens, in order, end to end timing.


def test_2000_tokens_in_order(lab):
    n = 2000
    run = _rid("fast2000")
    nb = lab.open_notebook()
    connect(nb)
    last = f"<{n - 1}>"
    # Watch the DOM from the browser side before the kernel publishes anything.
    lab.page.evaluate(
        """([run, last, timeout]) => {
             window.__aigc.seen = new Promise((resolve, reject) => {
               const sel = `#aigc-lab-panel .aigc-run[data-run-id="${run}"] .aigc-run-text`;
               let done = false, obs = null, iv = null;
               const finish = (v) => { if (done) return; done = true; obs && obs.disconnect();
                                       clearInterval(iv); resolve(v); };
               const check = () => {
                 const el = document.querySelector(sel);
                 if (el && el.textContent.endsWith(last)) finish(Date.now());
               };
               obs = new MutationObserver(check);
               obs.observe(document.body, {subtree: true, childList: true, characterData: true});
               iv = setInterval(check, 4);
               setTimeout(() => { if (!done) { done = true; obs.disconnect(); clearInterval(iv);
                                               reject(new Error('last token never shown')); } },
                          timeout);
             });
             window.__aigc.seen.catch(() => {});
           }""",
        [run, last, STEP_TIMEOUT * 1000],
    )
    res = nb.execute(fake_run_code(run, n))
    timing = res.json_lines()[-1]
    t_seen = lab.page.evaluate("() => window.__aigc.seen")
    attrs = assert_fake_run(lab, run, n)
    report = {
        "tokens_sent": n,
        "tokens_shown": int(attrs["data-token-count"]),
        "e2e_ms": round(t_seen - timing["t0"], 1),
        "kernel_publish_ms": round(timing["t_published"] - timing["t0"], 1),
        "dups": int(attrs["data-dups"]),
        "gaps": int(attrs["data-gaps"]),
        "status": attrs["data-status"],
    }
    print("\n" + json.dumps(report))
    (ARTIFACTS).mkdir(exist_ok=True)
    (ARTIFACTS / "e2e_2000_tokens.json").write_text(json.dumps(report) + "\n")
    assert report["e2e_ms"] >= 0
    # Generous ceiling: a regression to per-token messages/renders would blow far past it.
    assert report["e2e_ms"] < 10_000, report


# ---------------------------------------------------------------------------------------------
# 2 + 6. A real starter model (one kernel for both).


@pytest.fixture(scope="module")
def starter(lab) -> Notebook:
    nb = lab.open_notebook()
    connect(nb)
    nb.execute(f"import aigc_lab as al\nm = al.models.load({STARTER!r})", timeout=MODEL_LOAD_TIMEOUT)
    return nb


def test_stream_from_starter_model(lab, starter):
    starter.wait_panel_follows()
    res = starter.execute(
        "import json\n"
        "s = al.generate(m, 'Once upon a time', max_new_tokens=40)\n"
        "_text = s.text\n"
        "print(json.dumps({'run': s.run, 'text': _text}))",
        timeout=120,
    )
    out = res.json_lines()[-1]
    run, text = out["run"], out["text"]
    attrs = lab.wait_run(run, "ok")
    assert attrs["data-kind"] == "generate", attrs
    assert attrs["data-token-count"] == "40", {k: v for k, v in attrs.items() if k != "text"}
    assert attrs["data-dups"] == "0" and attrs["data-gaps"] == "0", attrs
    assert attrs["text"] == text, f"panel text {attrs['text']!r} != kernel text {text!r}"
    assert text, "the model generated an empty text"
    # The README's picture: the panel, cropped just below its last run.
    DOCS_PNG.parent.mkdir(exist_ok=True)
    box = lab.panel().bounding_box()
    bottom = lab.page.evaluate(
        "() => Math.max(0, ...[...document.querySelectorAll('#aigc-lab-panel .aigc-run')]"
        ".map(e => e.getBoundingClientRect().bottom))")
    height = min(box["height"], max(bottom - box["y"] + 12, 120))
    lab.page.screenshot(path=str(DOCS_PNG), clip={"x": box["x"], "y": box["y"],
                                                  "width": box["width"], "height": height})
    assert DOCS_PNG.stat().st_size > 1000


def test_cancel_from_panel(lab, starter):
    starter.wait_panel_follows()
    res = starter.execute(
        "import json\n"
        "s_bg = al.generate(m, 'x', max_new_tokens=100000, background=True)\n"
        "print(json.dumps({'run': s_bg.run}))",
    )
    run = res.json_lines()[-1]["run"]
    try:
        sel = f'#aigc-lab-panel .aigc-run[data-run-id="{run}"]'
        # Running, and visibly streaming, before we press cancel.
        lab.page.wait_for_function(
            """(sel) => { const el = document.querySelector(sel);
                          return !!el && el.getAttribute('data-status') === 'running'
                                 && Number(el.getAttribute('data-token-count')) > 0; }""",
            arg=sel, timeout=STEP_TIMEOUT * 1000,
        )
        button = lab.run_el(run).locator("button.aigc-cancel")
        try:  # a real mouse click: Playwright waits until the button is visible, enabled, stable
            button.click(timeout=STEP_TIMEOUT * 1000)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"could not click the cancel button of running run {run} like a user would "
                        f"(is it re-created on every token batch?): {str(exc).splitlines()[0]}")
        attrs = lab.wait_run(run, "cancelled")
        assert int(attrs["data-token-count"]) < 100000, attrs
        assert attrs["data-dups"] == "0" and attrs["data-gaps"] == "0", attrs
        assert lab.run_el(run).locator("button.aigc-cancel").count() == 0 or not \
            lab.run_el(run).locator("button.aigc-cancel").is_visible(), "cancel button still shown"
        # The kernel agrees: the run ended as cancelled and is no longer live.
        check = starter.execute(
            "import aigc_lab, json\n"
            f"_rec = aigc_lab.recorder[{run!r}]\n"
            "print(json.dumps({'status': _rec.status, 'live': "
            f"{run!r} in aigc_lab.runs.live(), 'tokens': len(_rec.tokens)}}))"
        ).json_lines()[-1]
        assert check["status"] == "cancelled" and not check["live"], check
        assert check["tokens"] == int(attrs["data-token-count"]), (check, attrs)
    finally:  # never leave a 100k-token generation burning CPU for the next tests
        starter.execute(f"import aigc_lab\naigc_lab.runs.cancel({run!r})", check=False)


# ---------------------------------------------------------------------------------------------
# 3. Malformed and unknown messages: warned about, ignored, panel keeps working.

MALFORMED = [
    {"v": 1, "type": "exec", "run": None},  # unknown type
    {"v": 1, "type": "tokens", "run": "bad-items", "items": "not-a-list"},  # wrong field type
    {"v": 1, "type": "run.start", "run": "bad-start"},  # missing fields
    {"type": "run.end", "run": "bad-nov", "status": "ok", "metrics": {"tokens": 0}, "error": None},
    {"v": 1, "type": "tokens", "run": "bad-item",
     "items": [{"i": "0", "id": 0, "text": "x", "ms": 0}]},  # ill-typed token item
    ["not", "an", "object"],
]


def test_malformed_messages_ignored(lab):
    nb = lab.open_notebook()
    connect(nb)
    before_warn = len(lab.warnings(MALFORMED_PREFIX))
    before_errors = len([1 for kind, _ in lab.console if kind == "pageerror"])
    before_runs = int(lab.panel().get_attribute("data-run-count") or 0)
    nb.execute(
        "import json\nfrom aigc_lab.jupyter import comm_bridge\n"
        f"for _m in json.loads({json.dumps(json.dumps(MALFORMED))}):\n"
        "    comm_bridge._comm.send(data=_m)\n"
    )
    run = _rid("after-bad")
    nb.execute(fake_run_code(run, 50))
    assert_fake_run(lab, run, 50)  # the panel keeps working after the garbage
    deadline = time.monotonic() + 5
    while len(lab.warnings(MALFORMED_PREFIX)) - before_warn < len(MALFORMED) and \
            time.monotonic() < deadline:
        lab.page.wait_for_timeout(50)
    warned = lab.warnings(MALFORMED_PREFIX)[before_warn:]
    assert len(warned) >= len(MALFORMED), (
        f"expected a console warning '{MALFORMED_PREFIX}...' per malformed message "
        f"({len(MALFORMED)}), got {len(warned)}: {warned}")
    for bad in ("bad-items", "bad-start", "bad-nov", "bad-item"):
        assert lab.run_el(bad).count() == 0, f"malformed message created run {bad}"
    assert int(lab.panel().get_attribute("data-run-count") or 0) == before_runs + 1
    assert lab.panel().get_attribute("data-connected") == "true"
    errors = [text for kind, text in lab.console if kind == "pageerror"][before_errors:]
    assert not errors, f"uncaught page errors: {errors}"


# ---------------------------------------------------------------------------------------------
# 4. Kernel restart: the panel re-registers its comm target.


def test_kernel_restart_reconnects(lab):
    nb = lab.open_notebook()
    connect(nb)
    run1 = _rid("pre-restart")
    nb.execute(fake_run_code(run1, 20))
    assert_fake_run(lab, run1, 20)
    kernel_id = nb.kernel_id
    nb.restart_kernel()
    # A fresh kernel has said no hello yet: the panel must not claim to be connected.
    try:
        lab.page.wait_for_function(
            "() => document.querySelector('#aigc-lab-panel').getAttribute('data-connected') !== 'true'",
            timeout=STEP_TIMEOUT * 1000)
    except Exception:  # noqa: BLE001
        pytest.fail("after a kernel restart the panel still says data-connected=true before any hello")
    nb.execute("import aigc_lab")
    lab.wait_attr("#aigc-lab-panel", "data-connected", "true")
    lab.wait_attr("#aigc-lab-panel", "data-kernel-id", nb.kernel_id)
    assert nb.kernel_id == kernel_id  # restart keeps the kernel id on the server
    run2 = _rid("post-restart")
    nb.execute(fake_run_code(run2, 30))
    assert_fake_run(lab, run2, 30)


# ---------------------------------------------------------------------------------------------
# 5. The panel follows the active notebook.


def test_follows_active_notebook(lab):
    a = lab.open_notebook()
    connect(a)
    run_a = _rid("nb-a")
    a.execute(fake_run_code(run_a, 10))
    assert_fake_run(lab, run_a, 10)

    b = lab.open_notebook()
    connect(b)
    run_b = _rid("nb-b")
    b.execute(fake_run_code(run_b, 12))
    assert_fake_run(lab, run_b, 12)
    assert a.kernel_id != b.kernel_id
    assert not shown(lab, run_a), "run of notebook A shown while B is active"

    for nb, mine, other, n in ((a, run_a, run_b, 10), (b, run_b, run_a, 12), (a, run_a, run_b, 10)):
        nb.activate()
        lab.wait_attr("#aigc-lab-panel", "data-kernel-id", nb.kernel_id)
        lab.page.wait_for_function(
            "(sel) => { const el = document.querySelector(sel);"
            " return !!el && !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length); }",
            arg=f'#aigc-lab-panel .aigc-run[data-run-id="{mine}"]', timeout=STEP_TIMEOUT * 1000,
        )
        assert_fake_run(lab, mine, n)
        assert not shown(lab, other), f"{other} still shown after activating {nb.path}"
        assert lab.panel().get_attribute("data-connected") == "true"


# ---------------------------------------------------------------------------------------------
# 8 (last: may leave a banner). A newer protocol version shows the mismatch banner.


def test_protocol_mismatch_banner(lab):
    nb = lab.open_notebook()
    connect(nb)
    assert lab.page.locator("#aigc-lab-panel .aigc-banner").filter(visible=True).count() == 0
    nb.execute(
        "from aigc_lab.jupyter import comm_bridge\n"
        "comm_bridge._comm.send(data={'v': 2, 'type': 'hello', 'run': None, 'version': 2,"
        " 'kernel': {'language': 'python'}})"
    )
    banner = lab.page.locator("#aigc-lab-panel .aigc-banner")
    banner.first.wait_for(state="visible", timeout=STEP_TIMEOUT * 1000)
    assert "2" in banner.first.inner_text(), banner.first.inner_text()
