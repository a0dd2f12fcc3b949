"""The aigc-lab panel in a real browser, driven by real kernels (see conftest.py for the harness).

Run: ``cd /work/main && .venv/bin/python -m pytest ui-tests -v -s``
"""

from __future__ import annotations

import csv
import json
import math
import time
import uuid
from pathlib import Path

import pytest
from aigc_ui_harness import (
    _JS_INSTALL,
    _JS_OPEN,
    ARTIFACTS,
    SCREENSHOTS,
    STEP_TIMEOUT,
    BrowserStartError,
    Lab,
    Notebook,
    launch_browser,
)

PANEL_PNG = SCREENSHOTS / "panel.png"
PANEL_DARK_PNG = SCREENSHOTS / "panel-dark.png"
INSPECTOR_PNG = SCREENSHOTS / "token-inspector.png"
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


def wait_chart(lab: Lab, sel: str, series: int, runs: list[str] | None = None,
               points: int | None = None) -> dict:
    """Wait until the chart ``sel`` in the panel is drawn with ``series`` series (and ``points``)."""
    full = f"#aigc-lab-panel {sel}"
    try:
        lab.page.wait_for_function(
            """([sel, series, runs, points]) => {
                 const el = document.querySelector(sel);
                 if (!el || el.getAttribute('data-rendered') !== 'true') return false;
                 if (Number(el.getAttribute('data-series-count')) !== series) return false;
                 if (points !== null && Number(el.getAttribute('data-point-count')) !== points) return false;
                 const have = (el.getAttribute('data-runs') || '').split(',');
                 return runs.every(r => have.includes(r)) && !!el.querySelector('canvas');
               }""",
            arg=[full, series, runs or [], points], timeout=STEP_TIMEOUT * 1000)
    except Exception:  # noqa: BLE001
        seen = lab.page.evaluate(
            "(sel) => { const el = document.querySelector(sel); if (!el) return null;"
            " const a = {}; for (const x of el.attributes) a[x.name] = x.value; return a; }", full)
        pytest.fail(f"{sel} should show {series} series of {runs} ({points} points); is {seen}")
    return lab.page.evaluate(
        "(sel) => { const el = document.querySelector(sel); const a = {};"
        " for (const x of el.attributes) a[x.name] = x.value; return a; }", full)


def select_runs(lab: Lab, runs: list[str]) -> None:
    """Tick exactly ``runs`` in the history table (real clicks), untick every other run."""
    rows = lab.page.locator("#aigc-lab-panel tr.aigc-history-row")
    for k in range(rows.count()):
        row = rows.nth(k)
        want = row.get_attribute("data-run-id") in runs
        if (row.get_attribute("data-selected") == "true") != want:
            row.locator("input.aigc-select").click()
    for r in runs:
        lab.wait_attr(f'#aigc-lab-panel tr.aigc-history-row[data-run-id="{r}"]', "data-selected", "true")


def screenshot_panel(lab: Lab, path: Path) -> None:
    """The panel, cropped just below its last section."""
    path.parent.mkdir(parents=True, exist_ok=True)
    box = lab.panel().bounding_box()
    bottom = lab.page.evaluate(
        "() => Math.max(0, ...[...document.querySelectorAll('#aigc-lab-panel > *')]"
        ".filter(e => e.offsetHeight > 0).map(e => e.getBoundingClientRect().bottom))")
    height = min(box["height"], max(bottom - box["y"] + 8, 120))
    lab.page.screenshot(path=str(path), clip={"x": box["x"], "y": box["y"],
                                              "width": box["width"], "height": height})
    assert path.stat().st_size > 1000


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
    # Live token stream: one tinted span per token, with a tooltip (index, id, piece, ms).
    el = lab.run_el(run)
    assert el.locator(".aigc-run-text span.aigc-tok").count() == 40
    title = el.locator(".aigc-run-text span.aigc-tok").nth(1).get_attribute("title") or ""
    assert title.startswith("#1 · id ") and title.endswith(" ms"), title
    # Metrics strip: model facts and figures.
    metric = lambda k: el.locator(f'.aigc-metric[data-metric="{k}"] .aigc-metric-value').inner_text()  # noqa: E731
    assert metric("model").startswith(STARTER), metric("model")
    assert metric("ttft").endswith("ms") and metric("p50").endswith("ms"), (metric("ttft"), metric("p50"))
    assert metric("tokens") == "40" and metric("status") == "ok"
    # And a latency chart of it (uPlot canvas drawn; 39 inter-token latencies).
    # redraws are throttled while streaming: the trailing redraw must bring the chart to all 39 points
    wait_chart(lab, ".aigc-latency-chart", series=1, runs=[run], points=39)
    chart = lab.page.locator("#aigc-lab-panel .aigc-latency-chart")
    assert chart.get_attribute("data-markers") == "1"  # the TTFT marker
    assert chart.locator("canvas").count() >= 1


def test_cancel_from_panel(lab, starter):
    starter.wait_panel_follows()
    res = starter.execute(
        "import json\n"
        # a long run: rotary positions have no end (GPT-2's 1,024 positions end in ~0.4 s at 2,400 tok/s)
        "m_long = al.models.load('starter:llama-tiny')\n"
        "s_bg = al.generate(m_long, 'x', max_new_tokens=100000, ignore_eos=True, background=True)\n"
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
        # A blinking caret follows the text (the last chunk of it) while the run runs.
        caret = lab.page.evaluate(
            "(sel) => getComputedStyle(document.querySelector(sel + ' .aigc-run-text > .aigc-chunk:last-child'),"
            " '::after').animationName", sel)
        assert caret == "aigc-blink", caret
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
# Issue 6: overlay, loss curve, CSV export, the README screenshots (light and dark).


def test_two_runs_overlay(lab, starter):
    starter.wait_panel_follows()
    res = starter.execute(
        "import json\n"
        "q = al.quantize(m, 'int8')\n"
        "_runs = []\n"
        "for _m in (m, q):\n"
        "    _s = al.generate(_m, 'The interpreter', max_new_tokens=40, temperature=0.8, top_k=40, seed=0)\n"
        "    _s.wait()\n"
        "    _runs.append(_s.run)\n"
        "print(json.dumps({'runs': _runs}))",
        timeout=180,
    )
    fp32, int8 = res.json_lines()[-1]["runs"]
    lab.wait_run(fp32, "ok")
    lab.wait_run(int8, "ok")
    before = wait_chart(lab, ".aigc-latency-chart", series=1, runs=[int8])  # the latest run alone
    select_runs(lab, [fp32, int8])
    attrs = wait_chart(lab, ".aigc-latency-chart", series=2, runs=[fp32, int8])
    assert attrs["data-markers"] == "2", attrs  # one TTFT marker per run
    # Other runs' series are swapped into the plot in place, not by building a new one.
    assert attrs["data-builds"] == before["data-builds"], (before, attrs)
    legend = lab.page.locator("#aigc-lab-panel .aigc-latency-chart .u-legend")
    assert legend.locator(".u-series").count() == 2, legend.inner_html()  # one per run
    assert "int8" in legend.inner_text() and "float32" in legend.inner_text(), legend.inner_text()
    row = lab.page.locator(f'#aigc-lab-panel tr.aigc-history-row[data-run-id="{int8}"]')
    assert "int8" in row.inner_text(), row.inner_text()
    # Export CSV (a real download of a Blob) holds both runs.
    with lab.page.expect_download(timeout=STEP_TIMEOUT * 1000) as dl:
        lab.page.locator("#aigc-lab-panel button.aigc-export-csv").click()
    download = dl.value
    assert download.suggested_filename.endswith(".csv"), download.suggested_filename
    ARTIFACTS.mkdir(exist_ok=True)
    csv_path = ARTIFACTS / "runs.csv"
    download.save_as(str(csv_path))
    csv_text = csv_path.read_text()
    assert csv_text.startswith("run,kind,model,status,ttft_ms,tok_s"), csv_text[:200]
    assert fp32 in csv_text and int8 in csv_text


def test_training_loss_curve(lab, starter):
    starter.wait_panel_follows()
    run = _rid("train")
    starter.execute(f"""
import time, math
from aigc_lab import bus, events
bus.publish(events.RunStart(run={run!r}, kind="train", model=events.ModelInfo(name="starter:gpt-tiny",
            params=1, dtype="float32", quant=None, device="cpu"), config={{}}, t0=time.time() * 1000))
for k in range(1, 31):
    bus.publish(events.TrainStep(run={run!r}, step=k, loss=3.0 * math.exp(-k / 12) + 0.5, lr=1e-3, tok_s=1000.0))
    if k % 10 == 0:
        bus.publish(events.TrainEval(run={run!r}, step=k, val_loss=3.1 * math.exp(-k / 12) + 0.6,
                                     ppl=None, metrics={{}}))
    time.sleep(0.01)
bus.publish(events.RunEnd(run={run!r}, status="ok"))
""")
    lab.wait_run(run, "ok")
    # No training run ticked: the loss chart shows the latest training run by itself.
    attrs = wait_chart(lab, ".aigc-loss-chart", series=2, runs=[run], points=33)
    assert attrs["data-series-count"] == "2", attrs  # train loss + eval loss
    row = lab.page.locator(f'#aigc-lab-panel tr.aigc-history-row[data-run-id="{run}"]')
    loss_text = row.locator("td.aigc-col-loss").inner_text()
    assert loss_text == "0.746 / 0.854", loss_text  # final train loss / final eval loss
    # The README picture (SCREENSHOTS): generation overlay + loss curve, the int8 run's stream in front.
    ticked = [r for r in lab.page.evaluate(
        "() => [...document.querySelectorAll('#aigc-lab-panel tr.aigc-history-row')]"
        ".filter(r => r.getAttribute('data-selected') === 'true').map(r => r.getAttribute('data-run-id'))")]
    select_runs(lab, ticked + [run])
    wait_chart(lab, ".aigc-latency-chart", series=len(ticked), runs=ticked)
    wait_chart(lab, ".aigc-loss-chart", series=2, runs=[run], points=33)
    gen_rows = lab.page.locator("#aigc-lab-panel tr.aigc-history-row", has_text="int8")
    if gen_rows.count():
        gen_rows.first.locator("td.aigc-col-model").click()
    lab.next_frames()
    screenshot_panel(lab, PANEL_PNG)
    assert PANEL_PNG.stat().st_size < 150_000, PANEL_PNG.stat().st_size


def test_dark_theme(lab, starter):
    starter.wait_panel_follows()
    light_axis = lab.page.locator("#aigc-lab-panel .aigc-latency-chart").get_attribute("data-theme-axis")
    try:
        lab.page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme',"
                          " {theme: 'JupyterLab Dark'})")
        lab.wait_attr("body", "data-jp-theme-light", "false")
        lab.wait_attr("#aigc-lab-panel", "data-theme-light", "false")
        lab.page.wait_for_function(
            "(a) => { const el = document.querySelector('#aigc-lab-panel .aigc-latency-chart');"
            " return el.getAttribute('data-rendered') === 'true' && el.getAttribute('data-theme-axis') !== a; }",
            arg=light_axis, timeout=STEP_TIMEOUT * 1000)
        bg = lab.page.evaluate("() => getComputedStyle(document.querySelector('#aigc-lab-panel'))"
                               ".backgroundColor")
        rgb = [int(v) for v in bg[bg.index("(") + 1:bg.index(")")].split(",")[:3]]
        assert sum(rgb) / 3 < 100, f"panel background {bg} is not dark"
        lab.next_frames()
        screenshot_panel(lab, PANEL_DARK_PNG)
        assert PANEL_DARK_PNG.stat().st_size < 150_000, PANEL_DARK_PNG.stat().st_size
    finally:
        lab.page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme',"
                          " {theme: 'JupyterLab Light'})")
        lab.wait_attr("body", "data-jp-theme-light", "true")


# ---------------------------------------------------------------------------------------------
# Issue 14, point 5: the token inspector (generate(..., logprobs=k)).

_JS_TOKEN_BGS = """(sel) => [...document.querySelectorAll(sel + ' .aigc-run-text span.aigc-tok')]
    .map(s => getComputedStyle(s).backgroundColor)"""


def screenshot_inspector(lab: Lab, run: str, path: Path) -> None:
    """The run's card and the open token popover (it floats over the page, outside the card)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    box = lab.page.evaluate(
        """(id) => {
             const rects = [document.querySelector(`#aigc-lab-panel .aigc-run[data-run-id="${id}"]`),
                            document.querySelector('.aigc-tokpop')].map(e => e.getBoundingClientRect());
             const x = Math.min(...rects.map(r => r.left)), y = Math.min(...rects.map(r => r.top));
             return {x, y, width: Math.max(...rects.map(r => r.right)) - x,
                     height: Math.max(...rects.map(r => r.bottom)) - y};
           }""", run)
    pad = 6
    lab.page.screenshot(path=str(path), clip={"x": max(0, box["x"] - pad), "y": max(0, box["y"] - pad),
                                              "width": box["width"] + 2 * pad,
                                              "height": box["height"] + 2 * pad})
    assert path.stat().st_size > 1000


def test_token_inspector(lab, starter):
    starter.wait_panel_follows()
    res = starter.execute(
        "import json\n"
        "s = al.generate(m, 'Once upon a time', max_new_tokens=24, logprobs=5)\n"
        "_text = s.text\n"
        "print(json.dumps({'run': s.run, 'text': _text, 'tokens': [{'i': t.i, 'id': t.id,"
        " 'top': [a.id for a in t.top]} for t in s.tokens if t.logprob is not None]}))",
        timeout=120,
    )
    out = res.json_lines()[-1]
    run, kernel_tokens = out["run"], out["tokens"]
    assert len(kernel_tokens) == 24 and all(len(t["top"]) == 5 for t in kernel_tokens), kernel_tokens
    attrs = lab.wait_run(run, "ok")
    assert attrs["data-logprobs"] == "true" and attrs["text"] == out["text"], attrs
    card = lab.run_el(run)
    sel = f'#aigc-lab-panel .aigc-run[data-run-id="{run}"]'
    assert card.locator(".aigc-run-text span.aigc-tok-lp").count() == 24

    # Colour by probability on demand (a real click), and back to the latency tint.
    toggle = card.locator("button.aigc-prob-toggle")
    assert toggle.is_visible() and toggle.get_attribute("aria-pressed") == "false"
    latency_bgs = lab.page.evaluate(_JS_TOKEN_BGS, sel)
    toggle.click()
    lab.wait_attr(sel, "data-color", "probability")
    assert toggle.get_attribute("aria-pressed") == "true"
    assert card.locator(".aigc-prob-legend .aigc-prob-key").filter(visible=True).count() == 5
    lab.next_frames()
    levels = lab.page.evaluate(
        "(sel) => [...document.querySelectorAll(sel + ' .aigc-run-text span.aigc-tok-lp')]"
        ".map(s => Number(/aigc-prob-(\\d)/.exec(s.className)[1]))", sel)
    prob_bgs = lab.page.evaluate(_JS_TOKEN_BGS, sel)
    clear = "rgba(0, 0, 0, 0)"
    for level, bg in zip(levels, prob_bgs, strict=False):  # the held-back tail, if any, has no level
        assert (bg == clear) == (level == 0), (levels, prob_bgs)
    assert prob_bgs != latency_bgs, "switching to probability changed no token's colour"
    toggle.click()
    lab.wait_attr(sel, "data-color", "latency")
    lab.next_frames()
    assert lab.page.evaluate(_JS_TOKEN_BGS, sel) == latency_bgs, "switching back lost the latency tint"
    toggle.click()
    lab.wait_attr(sel, "data-color", "probability")

    # Alternatives on focus: the first token is the stream's tab stop, arrow keys move along.
    popover = lab.page.locator('.aigc-tokpop[role="tooltip"]')
    card.locator(".aigc-run-text span.aigc-tok-lp").first.focus()
    lab.page.keyboard.press("ArrowRight")
    lab.page.keyboard.press("ArrowRight")
    focused = card.locator(".aigc-run-text span.aigc-tok-lp").nth(2)
    popover.wait_for(state="visible", timeout=STEP_TIMEOUT * 1000)
    lab.page.wait_for_function(  # the popover describes the token that has the focus
        "() => { const p = document.querySelector('.aigc-tokpop');"
        " return !!p && p.getAttribute('data-i') === document.activeElement.getAttribute('data-i'); }",
        timeout=STEP_TIMEOUT * 1000)
    i = int(focused.get_attribute("data-i"))
    assert focused.get_attribute("tabindex") == "0", "roving tabindex: the focused token is the tab stop"
    assert focused.get_attribute("aria-describedby") == popover.get_attribute("id")
    alts = popover.locator("tr.aigc-tokpop-alt")
    assert alts.count() == 5, popover.inner_text()
    expected = next(t for t in kernel_tokens if t["i"] == i)
    assert [int(alts.nth(k).get_attribute("data-id")) for k in range(5)] == expected["top"]
    chosen = popover.locator('tr.aigc-tokpop-alt[data-chosen="true"]')
    assert chosen.count() == (1 if expected["id"] in expected["top"] else 0), popover.inner_text()
    assert popover.locator(".aigc-tokpop-chosen").inner_text().startswith("chosen ")
    lab.next_frames()
    screenshot_inspector(lab, run, INSPECTOR_PNG)
    assert INSPECTOR_PNG.stat().st_size < 150_000, INSPECTOR_PNG.stat().st_size
    lab.page.keyboard.press("Escape")
    popover.wait_for(state="detached", timeout=STEP_TIMEOUT * 1000)
    assert focused.get_attribute("aria-describedby") is None

    # ... and on hover (nothing focused), closed when the pointer leaves.
    lab.page.evaluate("() => document.activeElement.blur()")
    hovered = card.locator(".aigc-run-text span.aigc-tok-lp").nth(5)
    hovered.hover()
    popover.wait_for(state="visible", timeout=STEP_TIMEOUT * 1000)
    assert popover.get_attribute("data-i") == hovered.get_attribute("data-i")
    card.locator(".aigc-run-header").hover()
    popover.wait_for(state="detached", timeout=STEP_TIMEOUT * 1000)

    # The run's tokens as CSV (a real download), logprob columns filled.
    with lab.page.expect_download(timeout=STEP_TIMEOUT * 1000) as dl:
        card.locator("button.aigc-tokens-csv").click()
    ARTIFACTS.mkdir(exist_ok=True)
    csv_path = ARTIFACTS / "tokens.csv"
    dl.value.save_as(str(csv_path))
    with csv_path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    generated = [r for r in rows if r["id"] != ""]
    assert len(generated) == 24 and "".join(r["text"] for r in rows) == out["text"], rows[:3]
    first = generated[0]
    assert float(first["logprob"]) <= 0 and abs(math.exp(float(first["logprob"])) - float(first["prob"])) < 1e-9
    assert [a["id"] for a in json.loads(first["top"])] == kernel_tokens[0]["top"], first


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


# ---------------------------------------------------------------------------------------------
# 9 (very last: reloads the page). A reloaded page asks the kernel for its history and shows it.


def test_reload_restores_history(lab):
    nb = lab.open_notebook()
    connect(nb)
    run = _rid("before-reload")
    nb.execute(fake_run_code(run, 50))
    assert_fake_run(lab, run, 50)
    train = _rid("train-before-reload")
    nb.execute(f"""
import time
from aigc_lab import bus, events
bus.publish(events.RunStart(run={train!r}, kind="train", model=events.ModelInfo(name="fake", params=1,
            dtype="float32", quant=None, device="cpu"), config={{}}, t0=time.time() * 1000))
for k in range(1, 11):
    bus.publish(events.TrainStep(run={train!r}, step=k, loss=3.0 - k / 10, lr=1e-3, tok_s=None))
bus.publish(events.RunEnd(run={train!r}, status="ok"))
""")
    lab.wait_run(train, "ok")
    lab.page.goto(f"{lab.server.url}lab?reset", wait_until="domcontentloaded",
                  timeout=STEP_TIMEOUT * 1000)
    lab.page.wait_for_function("() => !!window.jupyterapp", timeout=STEP_TIMEOUT * 1000)
    lab.page.evaluate("async () => { await window.jupyterapp.restored; }")
    lab.page.evaluate(_JS_INSTALL)
    # The same notebook again: same session, same kernel; the panel re-attaches to its comm.
    lab.page.evaluate(_JS_OPEN, {"path": nb.path, "timeout": STEP_TIMEOUT * 1000})
    nb.wait_panel_follows()
    lab.wait_attr("#aigc-lab-panel", "data-connected", "true")
    # Only the shown card renders its tokens: show the generate run (the training run is newer).
    lab.wait_run(train, "ok")
    lab.page.locator(f'#aigc-lab-panel tr.aigc-history-row[data-run-id="{run}"] td.aigc-col-model').click()
    assert_fake_run(lab, run, 50)  # replayed: all tokens, in order, no dups, no gaps
    select_runs(lab, [train])
    wait_chart(lab, ".aigc-loss-chart", series=1, runs=[train], points=10)
    assert int(lab.panel().get_attribute("data-run-count") or 0) >= 2


def test_server_extension_turns_off_nagle(lab):
    """The server loaded aigc_lab's server extension: kernel websockets send without Nagle's delay."""
    log = lab.server.log_tail(2000)
    assert "aigc_lab: kernel websockets send without Nagle's delay (TCP_NODELAY)" in log, log[-3000:]
