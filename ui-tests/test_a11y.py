"""JupyterLab conventions and accessibility of the aigc-lab panel in a real browser (issue 14, point 4).

- the layout restorer: the panel is not forced open; it comes back open (or collapsed) as left;
- the commands: in the AIGC Lab menu, Stop enabled only while a run runs, its shortcut cancels it
  and the polite live region says so;
- keyboard: history rows are reached with Tab and moved through with the arrow keys, and
  ``aria-selected`` follows the run shown;
- axe-core (``node_modules/axe-core``, injected into the live page) on the panel with runs shown:
  the report is printed and saved to ``ui-tests/artifacts/axe-report.json``; any serious or critical
  violation fails the test.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest
from aigc_ui_harness import ARTIFACTS, REPO, STEP_TIMEOUT, Lab, Notebook

AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
AXE_REPORT = ARTIFACTS / "axe-report.json"
PANEL = "#aigc-lab-panel"
STOP = "aigc-lab:stop-run"
STOP_KEYS = "Alt+Shift+S"  # schema/plugin.json, jupyter.lab.shortcuts
BLOCKING = ("serious", "critical")


def _rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _panel_shown(lab: Lab) -> bool:
    return lab.page.evaluate(
        "(sel) => { const el = document.querySelector(sel);"
        " return !!el && el.getClientRects().length > 0 && el.offsetWidth > 0; }", PANEL)


_JS_SAVED_RIGHT = """async () => {
  const ws = await window.jupyterapp.serviceManager.workspaces.fetch('default').catch(() => null);
  const data = ws && ws.data && ws.data['layout-restorer:data'];
  return (data && data.right) || null;
}"""


def _wait_saved_right_area(lab: Lab, current: str | None, collapsed: bool) -> None:
    """Wait until the saved workspace's right area is as given (the restorer saves after a debounce).
    Polled from here: ``wait_for_function`` would take the async predicate's promise as true."""
    deadline = time.monotonic() + STEP_TIMEOUT
    right = None
    while time.monotonic() < deadline:
        right = lab.page.evaluate(_JS_SAVED_RIGHT)
        if (right is not None and bool(right.get("collapsed")) == collapsed
                and (current is None or right.get("current") == current)):
            return
        lab.page.wait_for_timeout(100)  # poll interval (the condition is checked above)
    pytest.fail(f"the workspace never saved right area current={current} collapsed={collapsed}: {right}")


def _connect(lab: Lab) -> Notebook:
    nb = lab.open_notebook()
    nb.wait_panel_follows()
    nb.execute("import aigc_lab")
    lab.wait_attr(PANEL, "data-connected", "true")
    return nb


def _finished_runs_code(gen: str, train: str) -> str:
    """Kernel code: a finished generation (40 tokens) and a finished training run (30 steps)."""
    return f"""
import time as _time
from aigc_lab import bus as _bus, events as _ev
_m = _ev.ModelInfo(name="fake", params=1, dtype="float32", quant=None, device="cpu")
_t0 = _time.time() * 1000
_bus.publish(_ev.RunStart(run={gen!r}, kind="generate", model=_m, config={{}}, t0=_t0))
for _i in range(40):
    _bus.publish(_ev.Token(run={gen!r}, i=_i, id=_i, text=f"w{{_i}} ", ms=5.0 * (_i + 1)))
_bus.publish(_ev.RunEnd(run={gen!r}, status="ok", metrics=_ev.RunMetrics(tokens=40, ttft_ms=5.0, tok_s=200.0)))
_bus.publish(_ev.RunStart(run={train!r}, kind="train", model=_m, config={{}}, t0=_time.time() * 1000))
for _s in range(1, 31):
    _bus.publish(_ev.TrainStep(run={train!r}, step=_s, loss=3.0 / _s, lr=1e-3))
_bus.publish(_ev.RunEnd(run={train!r}, status="ok", metrics=_ev.RunMetrics(tokens=0)))
"""


def _cancellable_run_code(run: str) -> str:
    """Kernel code: a generation on a background thread, registered for cancel, that streams a
    token every 20 ms until cancelled (then ends `cancelled`)."""
    return f"""
import threading as _th, time as _time
from aigc_lab import bus as _bus, events as _ev, runs as _runs
def _stream(run={run!r}):
    flag = _runs.register(run)
    m = _ev.ModelInfo(name="fake", params=1, dtype="float32", quant=None, device="cpu")
    t0 = _time.time() * 1000
    _bus.publish(_ev.RunStart(run=run, kind="generate", model=m, config={{}}, t0=t0))
    i = 0
    while not flag.wait(0.02) and i < 3000:
        _bus.publish(_ev.Token(run=run, i=i, id=i, text=f"t{{i}} ", ms=_time.time() * 1000 - t0))
        i += 1
    _runs.unregister(run)
    _bus.publish(_ev.RunEnd(run=run, status="cancelled" if flag.is_set() else "ok",
                            metrics=_ev.RunMetrics(tokens=i)))
_th.Thread(target=_stream, daemon=True).start()
"""


def _axe(lab: Lab, selector: str) -> dict:
    if not AXE.is_file():
        pytest.fail(f"axe-core is missing at {AXE}: run `jlpm install` (it is a devDependency)")
    if not lab.page.evaluate("() => !!window.axe"):
        lab.page.add_script_tag(path=str(AXE))
    return lab.page.evaluate(
        """async (sel) => {
             const r = await window.axe.run(document.querySelector(sel), {resultTypes: ['violations']});
             return {
               engine: r.testEngine, url: r.url, timestamp: r.timestamp, context: sel,
               passes: r.passes.length, incomplete: r.incomplete.length,
               violations: r.violations.map(v => ({
                 id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl, tags: v.tags,
                 nodes: v.nodes.map(n => ({target: n.target, html: n.html.slice(0, 300),
                                           summary: n.failureSummary}))}))
             };
           }""", selector)


# ---------------------------------------------------------------------------------------------


def test_panel_is_restored_where_left_and_never_forced_open(lab: Lab):
    # a fresh layout: the panel is a right-sidebar tab, not opened by the extension
    lab.reload(reset=True, open_panel=False)
    assert lab.page.locator('.jp-SideBar .lm-TabBar-tab[data-id="aigc-lab-panel"]').count() == 1
    assert not _panel_shown(lab), "the panel opened itself on a fresh load"
    # opened, then collapsed by the user: the next load leaves it collapsed (each wait below
    # needs a save made after the step before it: the saved state alternates)
    lab.page.evaluate("() => window.jupyterapp.commands.execute('aigc-lab:open')")
    lab.page.locator(PANEL).wait_for(state="visible", timeout=STEP_TIMEOUT * 1000)
    lab.page.evaluate("() => window.jupyterapp.shell.collapseRight()")
    _wait_saved_right_area(lab, None, collapsed=True)
    lab.reload(reset=False, open_panel=False)
    assert not _panel_shown(lab), "the panel opened itself although the user had collapsed it"
    # opened by the user: the next load shows it again (restored, without the command)
    lab.page.evaluate("() => window.jupyterapp.commands.execute('aigc-lab:open')")
    lab.page.locator(PANEL).wait_for(state="visible", timeout=STEP_TIMEOUT * 1000)
    _wait_saved_right_area(lab, "aigc-lab-panel", collapsed=False)
    lab.reload(reset=False, open_panel=False)
    lab.page.locator(PANEL).wait_for(state="visible", timeout=STEP_TIMEOUT * 1000)
    lab.reload()  # the default the other tests expect: a fresh layout, the panel opened


def test_commands_menu_and_stop_shortcut(lab: Lab):
    nb = _connect(lab)
    page = lab.page
    # the AIGC Lab menu (schema/plugin.json, jupyter.lab.menus) lists the commands
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text="AIGC Lab").click()
    menu = page.locator(".lm-Menu", has_text="Stop Current Run")
    menu.wait_for(state="visible", timeout=STEP_TIMEOUT * 1000)
    labels = menu.locator(".lm-Menu-itemLabel").all_inner_texts()
    assert {"Open AIGC Lab Panel", "Stop Current Run", "Export AIGC Lab Run History as CSV"} <= set(labels), labels
    page.keyboard.press("Escape")

    enabled = "(id) => window.jupyterapp.commands.isEnabled(id)"
    stop_button = page.locator(f"{PANEL} .aigc-toolbar button.aigc-stop-run")
    assert page.evaluate(enabled, STOP) is False
    assert stop_button.is_disabled()
    run = _rid("a11y-stop")
    nb.execute(_cancellable_run_code(run))
    lab.wait_run(run, "running")
    page.wait_for_function(enabled, arg=STOP, timeout=STEP_TIMEOUT * 1000)
    page.wait_for_function(
        "(sel) => !document.querySelector(sel).disabled",
        arg=f"{PANEL} .aigc-toolbar button.aigc-stop-run", timeout=STEP_TIMEOUT * 1000)
    # the shortcut, from the notebook: the run is cancelled and the live region says so
    nb.activate()
    page.locator(".jp-Notebook").first.click()
    page.keyboard.press(STOP_KEYS)
    lab.wait_run(run, "cancelled")
    live = page.locator(f"{PANEL} .aigc-live[role=status][aria-live=polite]")
    page.wait_for_function(
        "([sel, run]) => (document.querySelector(sel).textContent || '').includes(run + ' was cancelled')",
        arg=[f"{PANEL} .aigc-live", run], timeout=STEP_TIMEOUT * 1000)
    text = live.text_content()
    assert f"Cancel of run {run} acknowledged" in text or f"run {run} was cancelled" in text, text
    assert page.evaluate(enabled, STOP) is False


def test_history_keyboard_and_axe_report(lab: Lab):
    nb = _connect(lab)
    page = lab.page
    gen, train = _rid("a11y-gen"), _rid("a11y-train")
    nb.execute(_finished_runs_code(gen, train))
    lab.wait_run(train, "ok")
    lab.wait_run(gen, "ok")

    # keyboard: Tab reaches the one tabbable row (the shown run: the newest); arrows move and show
    rows = page.locator(f"{PANEL} tr.aigc-history-row")
    assert rows.count() == 2
    first = rows.nth(0)
    lab.wait_attr(f'{PANEL} tr.aigc-history-row[data-run-id="{train}"]', "aria-selected", "true")
    assert first.get_attribute("data-run-id") == train and first.get_attribute("tabindex") == "0"
    assert rows.nth(1).get_attribute("tabindex") == "-1"
    first.focus()
    page.keyboard.press("ArrowDown")
    lab.wait_attr(f'{PANEL} tr.aigc-history-row[data-run-id="{gen}"]', "aria-selected", "true")
    assert first.get_attribute("aria-selected") == "false"
    assert page.evaluate("() => document.activeElement.getAttribute('data-run-id')") == gen
    page.wait_for_function(
        "(id) => { const el = document.querySelector(`#aigc-lab-panel .aigc-run[data-run-id=\"${id}\"]`);"
        " return !!el && !el.hidden && el.getClientRects().length > 0; }", arg=gen,
        timeout=STEP_TIMEOUT * 1000)
    page.keyboard.press("Space")
    lab.wait_attr(f'{PANEL} tr.aigc-history-row[data-run-id="{gen}"]', "data-selected", "true")
    page.keyboard.press("ArrowUp")
    lab.wait_attr(f'{PANEL} tr.aigc-history-row[data-run-id="{train}"]', "aria-selected", "true")

    # a running run too, so Stop is enabled and the card streams while axe looks
    live_run = _rid("a11y-live")
    nb.execute(_cancellable_run_code(live_run))
    lab.wait_run(live_run, "running")
    lab.next_frames(3)
    report = _axe(lab, PANEL)
    page.evaluate("(id) => window.jupyterapp.commands.execute('aigc-lab:stop-run')")
    lab.wait_run(live_run, "cancelled")

    by_impact = Counter(v["impact"] or "none" for v in report["violations"])
    report["summary"] = {impact: by_impact.get(impact, 0)
                         for impact in ("critical", "serious", "moderate", "minor")}
    ARTIFACTS.mkdir(exist_ok=True)
    AXE_REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\naxe-core {report['engine']['version']} on {PANEL}: {report['passes']} rules passed, "
          f"{report['incomplete']} incomplete, violations by impact {report['summary']} "
          f"(report: {AXE_REPORT.relative_to(REPO)})")
    for v in report["violations"]:
        print(f"  [{v['impact']}] {v['id']}: {v['help']} ({len(v['nodes'])} nodes) "
              f"e.g. {v['nodes'][0]['target'] if v['nodes'] else ''}")
    blocking = [v for v in report["violations"] if v["impact"] in BLOCKING]
    assert not blocking, json.dumps(blocking, indent=2)
