from __future__ import annotations

import logging

from aigc_lab.bus import EventBus, Recorder
from aigc_lab.events import ModelInfo, RunEnd, RunStart, Token, TrainStep

MODEL = ModelInfo(name="m", params=1, dtype="float32", quant=None, device="cpu")


def test_publish_reaches_every_sink_in_order_and_unsubscribe_works():
    bus, seen_a, seen_b = EventBus(), [], []
    unsub = bus.subscribe(seen_a.append)
    bus.subscribe(seen_b.append)
    events = [Token(run="r", i=i, id=i, text=str(i), ms=float(i)) for i in range(5)]
    for e in events:
        bus.publish(e)
    unsub()
    bus.publish(Token(run="r", i=5, id=5, text="5", ms=5.0))
    assert seen_a == events and len(seen_b) == 6


def test_a_failing_sink_is_logged_and_does_not_stop_others(caplog):
    bus, seen = EventBus(), []

    def broken(_event):
        raise RuntimeError("boom")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="aigc_lab"):
        bus.publish(Token(run="r", i=0, id=0, text="x", ms=0.0))
    assert len(seen) == 1 and "failed" in caplog.text


def test_recorder_keeps_history_of_cancelled_runs_and_caps_size():
    rec = Recorder(max_runs=2)
    rec(RunStart(run="a", kind="train", model=MODEL, config={}, t0=0.0))
    rec(TrainStep(run="a", step=1, loss=2.0, lr=1e-3))
    rec(Token(run="a", i=0, id=1, text="hi", ms=1.0))
    rec(RunEnd(run="a", status="cancelled"))
    assert rec["a"].status == "cancelled" and rec["a"].steps[0].loss == 2.0 and rec["a"].text == "hi"
    rec(RunStart(run="b", kind="generate", model=MODEL, config={}, t0=0.0))
    rec(RunStart(run="c", kind="generate", model=MODEL, config={}, t0=0.0))
    assert list(rec.runs) == ["b", "c"] and rec.last().status == "running"


def test_recorder_replays_steps_as_batches_between_evals_in_step_order():
    from aigc_lab.events import Checkpoint, TrainEval, TrainSteps

    rec = Recorder()
    rec(RunStart(run="t", kind="train", model=MODEL, config={}, t0=0.0))
    rec(TrainSteps(run="t", items=tuple(TrainStep(run="t", step=s, loss=1.0, lr=1e-3) for s in (1, 2))))
    rec(TrainStep(run="t", step=3, loss=1.0, lr=1e-3))
    rec(TrainEval(run="t", step=3, val_loss=0.5))
    rec(Checkpoint(run="t", step=3, path="ck"))
    rec(TrainStep(run="t", step=4, loss=1.0, lr=1e-3))
    rec(RunEnd(run="t", status="ok"))
    out = rec.replay()
    assert [e.type for e in out] == ["run.start", "train.steps", "train.eval", "checkpoint", "train.steps",
                                     "run.end"]
    assert [s.step for s in out[1].items] == [1, 2, 3] and [s.step for s in out[4].items] == [4]
