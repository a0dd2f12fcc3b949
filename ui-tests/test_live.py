"""The panel is live however the notebook runs (issue 14, point 1), on the quickstart's own cells.

Each mode: cells one by one, Run All, the page reloaded in the middle of a long foreground cell,
two notebooks on two kernels at once. "Live" means: a run's card appears within ``LIVE_MS`` of its
``run.start`` (the card's ``data-t0``, stamped by the kernel on the same host clock as the page's
``Date.now()``), and its step count keeps growing while the run is still running. The page logs
every change of every card (``Lab.watch_runs``); the assertions read that log.

Before the fix, the kernel streamed only after the panel's ``history`` request had been served on
the main shell, i.e. after the running cell (and, under Run All, every queued cell): these tests
then fail on the 1 s bound, or on the missing steps after a reload.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from aigc_ui_harness import STEP_TIMEOUT, Lab, Notebook

QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "01_quickstart.ipynb"
LIVE_MS = 1000.0
# After a page reload, JupyterLab (services 7) holds every message to a kernel until the kernel
# answers its kernel_info_request on the shell (which a running cell delays) or for at most 3 s.
SERVICES_HOLD_MS = 3000.0
MODEL_TIMEOUT = 240.0
RUN_ALL_TIMEOUT = 900.0


def quickstart(*parts: str) -> list[str]:
    """The quickstart's code cells that contain each of ``parts``, in that order; fails if the
    notebook no longer has exactly one such cell."""
    nb = json.loads(QUICKSTART.read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    out = []
    for part in parts:
        found = [c for c in cells if part in c]
        assert len(found) == 1, f"the quickstart has {len(found)} code cells containing {part!r}"
        out.append(found[0])
    return out


SETUP = ("import aigc_lab as al", "data = al.data.load", "model = al.models.load")
TRAIN = "run = al.finetune("


def training(steps: int, eval_every: int = 10) -> str:
    """The quickstart's training cell (``background=False``) with ``steps`` steps."""
    (cell,) = quickstart(TRAIN)
    for name, value in (("max_steps", steps), ("eval_every", eval_every)):
        cell, found = re.subn(rf"\b{name}=\d+", f"{name}={value}", cell)
        assert found == 1, f"the quickstart's training cell no longer sets {name}=<a number> once"
    assert "background=False" in cell
    return cell


def card(lab: Lab, run_kind: str = "train", status: str | None = "running", min_steps: int = 1,
         timeout: float = STEP_TIMEOUT) -> dict:
    """Wait for a run card of ``run_kind`` (newest first) with ``status`` and ``min_steps`` steps."""
    try:
        handle = lab.page.wait_for_function(
            """([kind, status, n]) => {
                 for (const el of document.querySelectorAll('#aigc-lab-panel .aigc-run[data-run-id]')) {
                   if (el.getAttribute('data-kind') !== kind) continue;
                   if (status !== null && el.getAttribute('data-status') !== status) continue;
                   if (Number(el.getAttribute('data-step-count')) < n) continue;
                   return {run: el.getAttribute('data-run-id'), t0: Number(el.getAttribute('data-t0')),
                           steps: Number(el.getAttribute('data-step-count')),
                           last: Number(el.getAttribute('data-last-step'))};
                 }
                 return false;
               }""", arg=[run_kind, status, min_steps], timeout=timeout * 1000)
    except Exception:  # noqa: BLE001
        seen = lab.page.evaluate(
            "() => [...document.querySelectorAll('#aigc-lab-panel .aigc-run')].map(e =>"
            " [e.getAttribute('data-run-id'), e.getAttribute('data-kind'), e.getAttribute('data-status'),"
            " e.getAttribute('data-step-count')])")
        pytest.fail(f"no {status} {run_kind} run with >= {min_steps} steps in the panel within "
                    f"{timeout:.0f}s; cards: {seen}")
    return handle.json_value()


def first_seen_ms(log: dict, run: str) -> float:
    """How long after its ``run.start`` the run's card first appeared (ms)."""
    entries = log.get(run)
    assert entries, f"run {run} never appeared in the panel (runs seen: {sorted(log)})"
    t0 = next((e["t0"] for e in entries if e["t0"] > 0), 0)
    assert t0 > 0, f"run {run} never showed its run.start: {entries[:3]}"
    return entries[0]["t"] - t0


def streamed_steps(log: dict, run: str) -> list[int]:
    """The distinct step counts the card showed while its run was running."""
    return sorted({e["steps"] for e in log.get(run, []) if e["status"] == "running" and e["steps"] > 0})


def stop_from_panel(lab: Lab, run: str) -> None:
    """Press the run's Stop button (the kernel is busy with the run's own cell) and wait for the end."""
    lab.run_el(run).locator("button.aigc-cancel").click(timeout=STEP_TIMEOUT * 1000)
    lab.wait_run(run, "cancelled")


def kernel_runs(nb: Notebook) -> dict:
    """The kernel's recorder: run id -> {kind, t0, status, steps, tokens}."""
    res = nb.execute(
        "import json, aigc_lab\n"
        "print(json.dumps({r: {'kind': rec.start.kind, 't0': rec.start.t0, 'status': rec.status,"
        " 'steps': len(rec.steps), 'tokens': len(rec.tokens)}"
        " for r, rec in aigc_lab.recorder.runs.items() if rec.start is not None}))")
    return res.json_lines()[-1]


def test_live_cell_by_cell_then_after_a_reload_mid_cell(lab):
    """Cells one by one; then the page reloads while the foreground training cell runs: the run is
    back, complete (every step from 1), still streaming, and Stop works while the cell runs."""
    nb = lab.open_notebook(sources=[*quickstart(*SETUP), training(5000)])
    nb.wait_panel_follows()
    lab.watch_runs()
    for code in quickstart(*SETUP):
        nb.execute(code, timeout=MODEL_TIMEOUT)
    nb.start(training(5000))
    run = card(lab, min_steps=3, timeout=MODEL_TIMEOUT)["run"]
    before = lab.run_log()
    print(f"\ncell by cell: {run} shown {first_seen_ms(before, run):.0f} ms after its run.start")
    assert first_seen_ms(before, run) <= LIVE_MS, before[run][:3]
    assert len(streamed_steps(before, run)) >= 3, before[run]

    lab.reload()
    nb = lab.reopen(nb, busy=True)
    nb.wait_panel_follows()
    lab.watch_runs()
    t_follow = lab.page.evaluate("() => Date.now()")
    shown = card(lab, min_steps=1)
    assert shown["run"] == run
    after = lab.run_log()
    print(f"after the reload: {run} shown {after[run][0]['t'] - t_follow:.0f} ms after the panel followed")
    assert after[run][0]["t"] - t_follow <= SERVICES_HOLD_MS + LIVE_MS, after[run][:3]
    # Complete: the replay of the steps before the reload arrived while the cell still runs.
    grown = card(lab, min_steps=shown["steps"] + 2)
    assert grown["steps"] == grown["last"], f"steps missing after the reload: {grown}"
    assert len(streamed_steps(lab.run_log(), run)) >= 2
    stop_from_panel(lab, run)
    ran = kernel_runs(nb)[run]
    assert ran["status"] == "cancelled", ran
    final = lab.run_attrs(run)
    assert int(final["data-step-count"]) == ran["steps"], (final, ran)


def test_live_under_run_all(lab):
    """Run ▸ Run All on the quickstart (a shorter training, no plots): every run shows within 1 s of
    its run.start although the following cells wait in the kernel's queue, and training streams."""
    sources = [*quickstart(*SETUP), training(40),
               *quickstart("h = run.history", "trained = run.model", "stream = al.generate(",
                           "m = stream.metrics", "long_run = al.generate", "for run_id, record")]
    nb = lab.open_notebook(sources=sources)
    nb.wait_panel_follows()
    lab.watch_runs()
    nb.run_all()
    nb.wait_run_all(RUN_ALL_TIMEOUT)
    log = lab.run_log()
    ran = kernel_runs(nb)
    kinds = sorted(r["kind"] for r in ran.values())
    assert kinds == ["generate", "generate", "train"], ran
    print("\nRun All: shown after run.start (ms):",
          {f"{f['kind']} {r}": round(first_seen_ms(log, r)) for r, f in ran.items() if r in log})
    for run, facts in ran.items():
        assert first_seen_ms(log, run) <= LIVE_MS, (run, facts, log.get(run, [])[:3])
        final = lab.run_attrs(run)
        assert final["data-status"] == facts["status"], (final, facts)
        assert int(final["data-token-count"]) == facts["tokens"], (final, facts)
        assert int(final["data-step-count"]) == facts["steps"], (final, facts)
    train = next(r for r, f in ran.items() if f["kind"] == "train")
    assert len(streamed_steps(log, train)) >= 3, log[train]


def test_live_with_two_notebooks_at_once(lab):
    """Two notebooks train at the same time on two kernels: each panel view is live."""
    a = lab.open_notebook(sources=[*quickstart(*SETUP), training(5000)])
    b = lab.open_notebook(sources=[*quickstart(*SETUP), training(5000)])
    for nb in (a, b):
        nb.wait_panel_follows()
        for code in quickstart(*SETUP):
            nb.execute(code, timeout=MODEL_TIMEOUT)
    b.wait_panel_follows()
    lab.watch_runs()
    a.start(training(5000))
    b.start(training(5000))
    run_b = card(lab, min_steps=3, timeout=MODEL_TIMEOUT)["run"]
    log = lab.run_log()
    print(f"\ntwo notebooks: {run_b} shown {first_seen_ms(log, run_b):.0f} ms after its run.start")
    assert first_seen_ms(log, run_b) <= LIVE_MS, log[run_b][:3]
    assert len(streamed_steps(log, run_b)) >= 3, log[run_b]
    # A has been training all along, out of view: shown at once, complete, and still streaming.
    a.wait_panel_follows()
    lab.watch_runs()
    shown = card(lab, min_steps=1)
    run_a = shown["run"]
    assert run_a != run_b
    grown = card(lab, min_steps=shown["steps"] + 2)
    assert grown["steps"] == grown["last"], f"steps of the background notebook missing: {grown}"
    assert len(streamed_steps(lab.run_log(), run_a)) >= 2
    stop_from_panel(lab, run_a)
    b.wait_panel_follows()
    stop_from_panel(lab, run_b)
    for nb, run in ((a, run_a), (b, run_b)):
        assert kernel_runs(nb)[run]["status"] == "cancelled"
