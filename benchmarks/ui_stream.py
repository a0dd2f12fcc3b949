"""Browser-side streaming benchmark of the aigc-lab panel.

Starts its own JupyterLab server and headless Chromium (through the UI-test harness,
``ui-tests/aigc_ui_harness.py``, loaded by path), opens a notebook, and streams tokens from that
notebook's kernel through the real bus -> comm -> panel path. Everything about delivery and
timing is measured **in the browser**:

* paced phase: ``--tokens`` tokens at ``--rate`` tokens/s. Each token's ``ms`` is its publish time
  in the kernel (wall clock, since the run's ``t0``); a MutationObserver on the panel records
  ``Date.now()`` when each token's span reaches the DOM (same machine, same clock). The JSON's
  ``p95_kernel_to_dom_ms`` is the 95th percentile of (DOM time - kernel publish time).
* burst phase: ``--tokens`` tokens published as fast as the kernel can; a requestAnimationFrame
  loop records frame-to-frame times (and a PerformanceObserver the long tasks) from just before
  the burst until its last token is shown. ``max_frame_ms`` is the longest frame.
* ``sent`` / ``delivered`` / ``dropped`` / ``dup`` are summed over every run: delivered counts
  distinct token indices that appeared in the DOM, dup the token spans that appeared twice plus
  the panel's own duplicate counter (``data-dups``).

Prints ONE JSON object (medians over ``--reps`` repetitions for the timings).

``--arrival`` splits the paced latency in two: an init script wraps every WebSocket's ``onmessage``
and records ``Date.now()`` when a message carrying a token reaches the page's main thread
(``kernel_to_ws``: the kernel's batching, ZeroMQ, the server, the socket and the wait for the main
thread) and the rest (``ws_to_dom``: the panel's own render path); it then repeats the paced runs
with the sidebar collapsed (nothing rendered, ``kernel_to_ws_hidden``), which shows what the
transport costs when the page's main thread is free.

``--compare-nagle`` also runs the paced phase on a second server started without aigc_lab's server
extension (kernel websockets keep Nagle's algorithm, Jupyter's default) and reports both p95s and
their ratio, measured in the same run.

``--soak`` measures the panel at scale instead (its own JSON): two notebooks on two kernels; the
followed one publishes ``--soak-runs`` generate runs of ``--soak-tokens`` tokens each (every run a
burst, as fast as the kernel publishes), then ``--soak-train`` training runs of ``--soak-steps``
steps (an eval every 100 steps), then the panel switches ``--soak-switches`` times between the two
notebooks (and as many before that with the panel collapsed, ``switches_panel_collapsed``: what
JupyterLab's own notebook activation costs, not counted in ``max_frame_ms``). A requestAnimationFrame
loop records the longest frame of each phase; the JS heap
(``JSHeapUsedSize`` from the Chrome DevTools Protocol's ``Performance.getMetrics``, after a forced
garbage collection) and the DOM's element count are read before, at checkpoints and after.

    .venv/bin/python benchmarks/ui_stream.py [--tokens 2000] [--rate 500] [--reps 3] [--compare-nagle] [--arrival]
    .venv/bin/python benchmarks/ui_stream.py --soak [--soak-runs 50 --soak-tokens 5000 --soak-train 20
                                                     --soak-steps 2000 --soak-switches 10]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HARNESS_PATH = REPO / "ui-tests" / "aigc_ui_harness.py"


def load_harness():
    spec = importlib.util.spec_from_file_location("aigc_ui_harness", HARNESS_PATH)
    assert spec is not None and spec.loader is not None, HARNESS_PATH
    module = importlib.util.module_from_spec(spec)
    sys.modules["aigc_ui_harness"] = module
    spec.loader.exec_module(module)
    return module


NODELAY_LOG_LINE = "kernel websockets send without Nagle's delay"

RUN_CODE = """
import json as _json, time as _time
from aigc_lab import bus as _bus, events as _ev
_run, _n, _rate = {run!r}, {n}, {rate}
_model = _ev.ModelInfo(name="bench", params=1, dtype="float32", quant=None, device="cpu")
_t0 = _time.time() * 1000
_bus.publish(_ev.RunStart(run=_run, kind="generate", model=_model, config={{"n": _n}}, t0=_t0))
_pub = []
_next = _time.perf_counter()
for _i in range(_n):
    if _rate > 0:
        _next += 1.0 / _rate
        _d = _next - _time.perf_counter()
        if _d > 0:
            _time.sleep(_d)
    _ms = _time.time() * 1000 - _t0
    _bus.publish(_ev.Token(run=_run, i=_i, id=_i, text=f"<{{_i}}>", ms=_ms))
    _pub.append(_t0 + _ms)
_bus.publish(_ev.RunEnd(run=_run, status="ok", metrics=_ev.RunMetrics(tokens=_n)))
print(_json.dumps({{"t0": _t0, "pub": _pub}}))
"""

JS_WATCH = """
({run, frames}) => {
  const st = {dom: {}, dup: 0, frames: [], longtasks: [], stop: false, seen: new WeakSet()};
  window.__bench = st;
  const record = (node, now) => {
    const i = node.getAttribute('data-i');
    // The same node can be reported twice (its run's card and its own insertion in one batch).
    if (i === null || st.seen.has(node)) return;
    st.seen.add(node);
    if (Object.prototype.hasOwnProperty.call(st.dom, i)) st.dup++; else st.dom[i] = now;
  };
  const obs = new MutationObserver(muts => {
    const now = Date.now();
    for (const m of muts) {
      for (const n of m.addedNodes) {
        if (n.nodeType !== 1) continue;
        if (n.classList.contains('aigc-tok')) { record(n, now); continue; }
        if (n.getAttribute('data-run-id') !== null && n.getAttribute('data-run-id') !== run) continue;
        for (const s of n.querySelectorAll('.aigc-tok')) record(s, now);
      }
    }
  });
  obs.observe(document.querySelector('#aigc-lab-panel'), {subtree: true, childList: true});
  st.obs = obs;
  if (frames) {
    let last = performance.now();
    const tick = (t) => { st.frames.push(t - last); last = t; if (!st.stop) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    try {
      const po = new PerformanceObserver(list => {
        for (const e of list.getEntries()) st.longtasks.push(e.duration);
      });
      po.observe({type: 'longtask', buffered: false});
      st.po = po;
    } catch (e) { /* longtask not supported */ }
  }
}
"""

JS_COLLECT = """
(run) => {
  const st = window.__bench;
  st.stop = true;
  st.obs.disconnect();
  if (st.po) st.po.disconnect();
  const el = document.querySelector(`#aigc-lab-panel .aigc-run[data-run-id="${run}"]`);
  return {dom: st.dom, dup: st.dup, frames: st.frames, longtasks: st.longtasks,
          panel_dups: el ? Number(el.getAttribute('data-dups')) : null,
          panel_count: el ? Number(el.getAttribute('data-token-count')) : null};
}
"""


JS_ARRIVAL = r"""
(() => {
  // When each token's websocket message reached the main thread (the token texts are "<i>").
  window.__arrival = {};
  const decoder = new TextDecoder();
  const prop = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage');
  Object.defineProperty(WebSocket.prototype, 'onmessage', {
    configurable: true,
    get() { return prop.get.call(this); },
    set(fn) {
      prop.set.call(this, typeof fn !== 'function' ? fn : function (ev) {
        const now = Date.now();
        const text = typeof ev.data === 'string' ? ev.data : decoder.decode(ev.data);
        for (const m of text.matchAll(/<(\d+)>/g)) {
          if (!(m[1] in window.__arrival)) window.__arrival[m[1]] = now;
        }
        return fn.call(this, ev);
      });
    }
  });
})();
"""

BUILD: list[str] = []
"""The aigc-lab bundle (``remoteEntry.<hash>.js``) each page loaded: which build was measured."""

JS_BUILD = """
() => performance.getEntriesByType('resource').map(e => e.name)
  .filter(n => n.includes('/aigc-lab/') && n.includes('remoteEntry')).map(n => n.split('/').pop())
"""


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(-(-q * len(s) // 1)) - 1))
    return s[k]


def one_run(h, lab, nb, n: int, rate: float, frames: bool, arrival: bool = False, hidden: bool = False) -> dict:
    """One run of ``n`` tokens at ``rate`` (0: as fast as the kernel publishes); ``hidden``: the panel is collapsed,
    only websocket arrival is measured (needs ``arrival``)."""
    run = f"bench-{uuid.uuid4().hex[:8]}"
    if arrival:
        lab.page.evaluate("() => { window.__arrival = {}; }")
    lab.page.evaluate(JS_WATCH, {"run": run, "frames": frames})
    res = nb.execute(RUN_CODE.format(run=run, n=n, rate=rate), timeout=120)
    kernel = res.json_lines()[-1]
    # Wait until every token is in the DOM (or give up after a while: then some were dropped).
    seen = "window.__arrival" if hidden else "window.__bench.dom"
    try:
        lab.page.wait_for_function(f"(n) => Object.keys({seen}).length >= n", arg=n, timeout=20_000)
    except Exception:  # noqa: BLE001 - measured as dropped below
        pass
    lab.page.wait_for_timeout(150)  # a few more frames after the last token
    got = lab.page.evaluate(JS_COLLECT, run)
    split: dict = {}
    if arrival:
        came = lab.page.evaluate("() => window.__arrival")
        ws = [came[str(i)] - kernel["pub"][i] for i in range(n) if str(i) in came]
        dom = [got["dom"][str(i)] - came[str(i)] for i in range(n) if str(i) in came and str(i) in got["dom"]]
        split = {"kernel_to_ws_p50_ms": statistics.median(ws) if ws else None,
                 "kernel_to_ws_p95_ms": percentile(ws, 0.95) if ws else None,
                 "ws_to_dom_p50_ms": statistics.median(dom) if dom else None,
                 "ws_to_dom_p95_ms": percentile(dom, 0.95) if dom else None}
        if hidden:
            return {"sent": n, "delivered": len(came), "dup": 0, **split}
    lat = [got["dom"][str(i)] - kernel["pub"][i] for i in range(n) if str(i) in got["dom"]]
    delivered = len(got["dom"])
    return {**split,
        "sent": n,
        "delivered": delivered,
        "dup": got["dup"] + (got["panel_dups"] or 0),
        "panel_dups": got["panel_dups"],
        "p50_ms": statistics.median(lat) if lat else None,
        "p95_ms": percentile(lat, 0.95) if lat else None,
        "max_ms": max(lat) if lat else None,
        "max_frame_ms": max(got["frames"]) if got["frames"] else None,
        "frames": len(got["frames"]),
        "longtasks": len(got["longtasks"]),
        "max_longtask_ms": max(got["longtasks"]) if got["longtasks"] else 0.0,
    }


JS_IDLE_FRAMES = """
async (ms) => {
  const frames = [];
  let last = performance.now();
  const t0 = last;
  await new Promise(resolve => {
    const tick = (t) => { frames.push(t - last); last = t;
                          if (t - t0 < ms) requestAnimationFrame(tick); else resolve(); };
    requestAnimationFrame(tick);
  });
  return Math.max(...frames);
}
"""


def session(h, args, *, burst_phase: bool, server_args: list[str] | None = None):
    """One JupyterLab server + Chromium: warm-up, idle frames, the paced runs and (optionally) the bursts."""
    from playwright.sync_api import sync_playwright

    server = h.start_server(server_args)
    try:
        with sync_playwright() as pw:
            context, user_dir = h.launch_browser(pw)
            if args.arrival:
                context.add_init_script(JS_ARRIVAL)
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.goto(f"{server.url}lab?reset", wait_until="domcontentloaded",
                          timeout=h.STEP_TIMEOUT * 1000)
                page.wait_for_function("() => !!window.jupyterapp", timeout=h.STEP_TIMEOUT * 1000)
                page.evaluate("async () => { await window.jupyterapp.restored; }")
                page.evaluate(h._JS_INSTALL)
                BUILD.extend(b for b in page.evaluate(JS_BUILD) if b not in BUILD)
                lab = h.Lab(page=page, server=server)
                open_panel(page)
                nb = lab.open_notebook()
                nb.wait_panel_follows()
                nb.execute("import aigc_lab")
                lab.wait_attr("#aigc-lab-panel", "data-connected", "true")
                if args.no_tint:
                    page.evaluate("""() => { for (const w of window.jupyterapp.shell.widgets('right')) {
                        if (w.id === 'aigc-lab-panel') w.settings = {...w.settings, tinting: false}; } }""")
                # Warm-up (JIT, first layout of the views), not counted.
                one_run(h, lab, nb, 200, 0, frames=False)
                # Noise floor: the longest frame of an idle page on this machine right now.
                idle = [page.evaluate(JS_IDLE_FRAMES, 2000) for _ in range(args.reps)]
                paced = [one_run(h, lab, nb, args.tokens, args.rate, frames=False, arrival=args.arrival)
                         for _ in range(args.reps)]
                burst = [one_run(h, lab, nb, args.tokens, 0, frames=True)
                         for _ in range(args.reps)] if burst_phase else []
                hidden = []
                if args.arrival and burst_phase:
                    page.evaluate("() => window.jupyterapp.shell.collapseRight()")
                    hidden = [one_run(h, lab, nb, args.tokens, args.rate, frames=False, arrival=True, hidden=True)
                              for _ in range(args.reps)]
                nodelay = NODELAY_LOG_LINE in server.log_tail(2000)
            finally:
                context.close()
                shutil.rmtree(user_dir, ignore_errors=True)
    finally:
        h.stop_server(server)
        shutil.rmtree(server.tmp, ignore_errors=True)
    return paced, burst, idle, nodelay, hidden


def open_panel(page) -> None:
    """Open the panel with its command (the layout restorer does not force it open) and wait for it."""
    page.evaluate("() => window.jupyterapp.commands.execute('aigc-lab:open')")
    page.wait_for_selector("#aigc-lab-panel", state="visible", timeout=30_000)


SOAK_GEN_CODE = """
import json as _json, time as _time
from aigc_lab import bus as _bus, events as _ev
_model = _ev.ModelInfo(name="soak", params=1, dtype="float32", quant=None, device="cpu")
_ids = []
for _r in range({first}, {last}):
    _run = f"soak-gen-{{_r:03d}}"
    _ids.append(_run)
    _t0 = _time.time() * 1000
    _bus.publish(_ev.RunStart(run=_run, kind="generate", model=_model, config={{"n": {n}}}, t0=_t0))
    for _i in range({n}):
        _bus.publish(_ev.Token(run=_run, i=_i, id=_i % 50000, text=f" w{{_i}}" + ("\\n" if _i % 40 == 39 else ""),
                               ms=_time.time() * 1000 - _t0))
    _bus.publish(_ev.RunEnd(run=_run, status="ok", metrics=_ev.RunMetrics(tokens={n})))
print(_json.dumps({{"runs": _ids}}))
"""

SOAK_TRAIN_CODE = """
import json as _json, math as _math, time as _time
from aigc_lab import bus as _bus, events as _ev
_model = _ev.ModelInfo(name="soak-train", params=1, dtype="float32", quant=None, device="cpu")
_ids = []
for _r in range({runs}):
    _run = f"soak-train-{{_r:03d}}"
    _ids.append(_run)
    _bus.publish(_ev.RunStart(run=_run, kind="train", model=_model, config={{"max_steps": {steps}}},
                              t0=_time.time() * 1000))
    for _s in range(1, {steps} + 1):
        _bus.publish(_ev.TrainStep(run=_run, step=_s, loss=4.0 / _math.sqrt(_s) + 0.01 * (_s % 7), lr=1e-4))
        if _s % 100 == 0:
            _bus.publish(_ev.TrainEval(run=_run, step=_s, val_loss=4.2 / _math.sqrt(_s)))
    _bus.publish(_ev.RunEnd(run=_run, status="ok", metrics=_ev.RunMetrics()))
print(_json.dumps({{"runs": _ids}}))
"""

JS_FRAMES_START = """
() => {
  const st = {max: 0, over50: 0, over33: 0, n: 0, stop: false, render: 0, longtask: 0};
  window.__soakFrames = st;
  // The panel's own share: the longest run of its frame scheduler (its whole render path).
  const panel = window.jupyterapp.shell.widgets('right').find(w => w.id === 'aigc-lab-panel')
    || [...window.jupyterapp.shell.widgets('main')].find(w => w.id === 'aigc-lab-panel');
  const sched = panel && panel.scheduler;
  if (sched && !sched.__soakWrapped) {
    const run = sched.runFrame.bind(sched);
    sched.runFrame = () => { const t = performance.now(); run(); const d = performance.now() - t;
      const s = window.__soakFrames; if (s && d > s.render) s.render = d; };
    sched.__soakWrapped = true;
  }
  try {
    st.po = new PerformanceObserver(list => { for (const e of list.getEntries())
      if (e.duration > st.longtask) st.longtask = e.duration; });
    st.po.observe({type: 'longtask', buffered: false});
  } catch (e) { /* no longtask */ }
  let last = performance.now();
  const tick = (t) => { const d = t - last; last = t; st.n++;
    if (d > st.max) st.max = d; if (d > 50) st.over50++; if (d > 33.4) st.over33++;
    if (!st.stop) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}
"""

JS_FRAMES_STOP = """
() => { const st = window.__soakFrames; st.stop = true; if (st.po) st.po.disconnect();
        const r = (x) => Math.round(x * 10) / 10;
        return {max_frame_ms: r(st.max), frames: st.n, frames_over_50ms: st.over50,
                frames_over_33ms: st.over33, panel_render_max_ms: r(st.render),
                max_longtask_ms: r(st.longtask)}; }
"""

JS_PANEL_DONE = """
([run, status, attr, count]) => {
  const el = document.querySelector(`#aigc-lab-panel .aigc-run[data-run-id="${run}"]`);
  return !!el && el.getAttribute('data-status') === status && Number(el.getAttribute(attr)) >= count;
}
"""

JS_DOM = """
() => ({elements: document.getElementsByTagName('*').length,
        panel_elements: document.querySelector('#aigc-lab-panel').getElementsByTagName('*').length,
        token_spans: document.querySelectorAll('#aigc-lab-panel .aigc-tok').length,
        cards: document.querySelectorAll('#aigc-lab-panel .aigc-run').length})
"""


def soak(h, args) -> dict:
    """The soak (``--soak``): many long runs, then notebook switches; frames, heap and DOM size."""
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    server = h.start_server()
    try:
        with sync_playwright() as pw:
            context, user_dir = h.launch_browser(pw)
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.goto(f"{server.url}lab?reset", wait_until="domcontentloaded",
                          timeout=h.STEP_TIMEOUT * 1000)
                page.wait_for_function("() => !!window.jupyterapp", timeout=h.STEP_TIMEOUT * 1000)
                page.evaluate("async () => { await window.jupyterapp.restored; }")
                page.evaluate(h._JS_INSTALL)
                BUILD.extend(b for b in page.evaluate(JS_BUILD) if b not in BUILD)
                lab = h.Lab(page=page, server=server)
                open_panel(page)
                cdp = context.new_cdp_session(page)
                cdp.send("Performance.enable")

                def heap_mb() -> float:
                    cdp.send("HeapProfiler.collectGarbage")
                    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                    return round(metrics["JSHeapUsedSize"] / 2**20, 1)

                other = lab.open_notebook()
                other.wait_panel_follows()
                other.execute("import aigc_lab")
                lab.wait_attr("#aigc-lab-panel", "data-connected", "true")
                nb = lab.open_notebook()
                nb.wait_panel_follows()
                nb.execute("import aigc_lab")
                lab.wait_attr("#aigc-lab-panel", "data-connected", "true")
                other_kernel, nb_kernel = other.kernel_id, nb.kernel_id
                heap = {"before": heap_mb()}
                dom = {"before": page.evaluate(JS_DOM)}
                phases: dict[str, dict] = {}

                # Generate runs, in slices so the heap can be read on the way (bounded, not growing).
                t = time.monotonic()
                done = 0
                slices = []
                checkpoints = sorted({max(1, args.soak_runs // 5), args.soak_runs // 2, args.soak_runs})
                for upto in checkpoints:
                    page.evaluate(JS_FRAMES_START)  # frames recorded while streaming, not while GC is forced
                    ids = nb.execute(SOAK_GEN_CODE.format(first=done, last=upto, n=args.soak_tokens),
                                     timeout=600).json_lines()[-1]["runs"]
                    page.wait_for_function(JS_PANEL_DONE, arg=[ids[-1], "ok", "data-rendered-count",
                                                               args.soak_tokens], timeout=300_000)
                    lab.next_frames(3)
                    slices.append(page.evaluate(JS_FRAMES_STOP))
                    done = upto
                    heap[f"after_{upto}_generate_runs"] = heap_mb()
                phases["generate"] = {
                    **{k: max(x[k] for x in slices) for k in slices[0] if k != "frames"},
                    "frames": sum(x["frames"] for x in slices),
                    "frames_over_50ms": sum(x["frames_over_50ms"] for x in slices),
                    "frames_over_33ms": sum(x["frames_over_33ms"] for x in slices),
                    "wall_s": round(time.monotonic() - t, 1)}
                last_card = page.evaluate(
                    "(run) => { const el = document.querySelector(`#aigc-lab-panel .aigc-run[data-run-id=\"${run}\"]`);"
                    " return {tokens: Number(el.getAttribute('data-token-count')),"
                    " elided: Number(el.getAttribute('data-elided')),"
                    " in_dom: el.querySelectorAll('.aigc-tok').length}; }", ids[-1])
                dom["after_generate"] = page.evaluate(JS_DOM)

                # Training runs.
                t = time.monotonic()
                page.evaluate(JS_FRAMES_START)
                ids = nb.execute(SOAK_TRAIN_CODE.format(runs=args.soak_train, steps=args.soak_steps),
                                 timeout=600).json_lines()[-1]["runs"]
                page.wait_for_function(JS_PANEL_DONE, arg=[ids[-1], "ok", "data-last-step", args.soak_steps],
                                       timeout=300_000)
                page.wait_for_function(
                    "(n) => Number(document.querySelector('#aigc-lab-panel .aigc-loss-chart')"
                    ".getAttribute('data-point-count')) > 0", arg=1, timeout=60_000)
                phases["train"] = {**page.evaluate(JS_FRAMES_STOP), "wall_s": round(time.monotonic() - t, 1)}
                loss_points = int(page.get_attribute("#aigc-lab-panel .aigc-loss-chart", "data-point-count"))
                heap["after_train_runs"] = heap_mb()
                dom["after_train"] = page.evaluate(JS_DOM)

                def switches(shown: bool) -> dict:
                    """Activate the two notebooks in turn; wait for the panel to follow each, or with the
                    panel collapsed for JupyterLab to make it current."""
                    t = time.monotonic()
                    page.evaluate(JS_FRAMES_START)
                    for _ in range(args.soak_switches):
                        for target, kid in ((other, other_kernel), (nb, nb_kernel)):
                            target.activate()
                            if shown:
                                lab.wait_attr("#aigc-lab-panel", "data-kernel-id", kid)
                            else:
                                page.wait_for_function("(id) => window.jupyterapp.shell.currentWidget?.id === id",
                                                       arg=target.widget_id, timeout=30_000)
                            lab.next_frames(2)
                    return {**page.evaluate(JS_FRAMES_STOP), "wall_s": round(time.monotonic() - t, 1)}

                # The same switches with the panel collapsed first: what JupyterLab's own notebook
                # activation costs on this machine, beside the panel's figure in the same run.
                page.evaluate("() => window.jupyterapp.shell.collapseRight()")
                lab.next_frames(3)
                phases["switches_panel_collapsed"] = switches(shown=False)
                open_panel(page)
                lab.wait_attr("#aigc-lab-panel", "data-kernel-id", nb_kernel)
                lab.next_frames(3)
                # Switches between the two notebooks (the panel follows the active one).
                phases["switches"] = switches(shown=True)
                heap["after_switches"] = heap_mb()
                dom["after_switches"] = page.evaluate(JS_DOM)
                run_count = int(page.get_attribute("#aigc-lab-panel", "data-run-count"))
            finally:
                context.close()
                shutil.rmtree(user_dir, ignore_errors=True)
    finally:
        h.stop_server(server)
        shutil.rmtree(server.tmp, ignore_errors=True)
    return {
        "soak": True,
        "labextension_build": BUILD,
        "generate_runs": args.soak_runs,
        "tokens_per_run": args.soak_tokens,
        "train_runs": args.soak_train,
        "steps_per_run": args.soak_steps,
        "switches": args.soak_switches,
        "max_frame_ms": max(p["max_frame_ms"] for k, p in phases.items() if k != "switches_panel_collapsed"),
        "phases": phases,
        "js_heap_mb": heap,
        "js_heap_growth_mb": round(heap["after_switches"] - heap["before"], 1),
        "dom": dom,
        "last_generate_card": last_card,
        "loss_chart_points": loss_points,
        "runs_in_panel": run_count,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "wall_s": round(time.monotonic() - started, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=500.0, help="paced phase, tokens/s")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-tint", action="store_true", help="turn the token tinting setting off")
    ap.add_argument("--compare-nagle", action="store_true",
                    help="also measure the paced phase without aigc_lab's TCP_NODELAY server extension")
    ap.add_argument("--arrival", action="store_true",
                    help="split the paced latency at the websocket's arrival; repeat it with the panel collapsed")
    ap.add_argument("--soak", action="store_true", help="the soak instead (see the module docstring)")
    ap.add_argument("--soak-runs", type=int, default=50)
    ap.add_argument("--soak-tokens", type=int, default=5000)
    ap.add_argument("--soak-train", type=int, default=20)
    ap.add_argument("--soak-steps", type=int, default=2000)
    ap.add_argument("--soak-switches", type=int, default=10)
    args = ap.parse_args()

    h = load_harness()
    if args.soak:
        print(json.dumps(soak(h, args)))
        return 0
    started = time.monotonic()
    paced, burst, idle, nodelay, hidden = session(h, args, burst_phase=True)
    nagle: list[dict] = []
    if args.compare_nagle:
        nagle, _, _, nagle_nodelay, _ = session(h, args, burst_phase=False,
                                             server_args=["--ServerApp.jpserver_extensions=aigc_lab=False"])
        if nagle_nodelay:
            raise SystemExit("--compare-nagle: the second server still loaded the TCP_NODELAY extension")

    runs = paced + burst + nagle
    sent = sum(r["sent"] for r in runs)
    delivered = sum(r["delivered"] for r in runs)

    def med(rows: list[dict], key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return round(statistics.median(vals), 1) if vals else None

    out = {
        "sent": sent,
        "delivered": delivered,
        "dropped": sent - delivered,
        "dup": sum(r["dup"] for r in runs),
        "tokens_per_run": args.tokens,
        "repetitions": args.reps,
        "paced_rate_tok_s": args.rate,
        "p50_kernel_to_dom_ms": med(paced, "p50_ms"),
        "p95_kernel_to_dom_ms": med(paced, "p95_ms"),
        "max_kernel_to_dom_ms": med(paced, "max_ms"),
        "p95_kernel_to_dom_ms_each": [round(r["p95_ms"], 1) for r in paced if r["p95_ms"] is not None],
        "max_frame_ms": med(burst, "max_frame_ms"),
        "max_frame_ms_each": [round(r["max_frame_ms"], 1) for r in burst if r["max_frame_ms"]],
        "burst_longtasks": sum(r["longtasks"] for r in burst),
        "burst_max_longtask_ms": round(max(r["max_longtask_ms"] for r in burst), 1),
        "burst_kernel_to_dom_p95_ms": med(burst, "p95_ms"),
        "idle_max_frame_ms": round(statistics.median(idle), 1),
        "nodelay_server_extension": nodelay,
        "labextension_build": BUILD,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    if args.arrival:
        for key in ("kernel_to_ws_p50_ms", "kernel_to_ws_p95_ms", "ws_to_dom_p50_ms", "ws_to_dom_p95_ms"):
            out[key] = med(paced, key)
        out["kernel_to_ws_hidden_p50_ms"] = med(hidden, "kernel_to_ws_p50_ms")
        out["kernel_to_ws_hidden_p95_ms"] = med(hidden, "kernel_to_ws_p95_ms")
        out["hidden_delivered"] = sum(r["delivered"] for r in hidden)
    if nagle:
        out["p95_kernel_to_dom_ms_without_nodelay"] = med(nagle, "p95_ms")
        out["p95_kernel_to_dom_ms_without_nodelay_each"] = [round(r["p95_ms"], 1) for r in nagle]
        out["p95_nodelay_vs_nagle"] = round(med(paced, "p95_ms") / med(nagle, "p95_ms"), 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
