"""The comm sink: batching (fewer messages than tokens, none lost, in order), cancel/ack, bad input."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from aigc_lab import runs
from aigc_lab.bus import EventBus
from aigc_lab.errors import ProtocolError
from aigc_lab.events import ModelInfo, RunEnd, RunMetrics, RunStart, Token, from_message
from aigc_lab.jupyter.comm_bridge import MAX_ID, CommBridge, _data_of

MODEL = ModelInfo(name="m", params=1, dtype="float32", quant=None, device="cpu")


class Wire(list):
    """What the panel receives, in order, with the sink's ``batch`` es opened; ``raw``: the comm messages as sent
    (each checked to be valid protocol)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[dict] = []
        self._lock = threading.Lock()

    def append(self, msg) -> None:
        from_message(msg)
        with self._lock:
            self.raw.append(msg)
            self.extend(msg["messages"] if msg["type"] == "batch" else [msg])


@pytest.fixture
def wire():
    bus, sent = EventBus(), Wire()
    bridge = CommBridge(sent.append, event_bus=bus)
    yield bus, bridge, sent
    bridge.close()


def _tokens(sent, run="r"):
    return [item for m in sent if m["type"] == "tokens" and m["run"] == run for item in m["items"]]


def test_fast_stream_is_batched_complete_and_in_order(wire):
    bus, bridge, sent = wire
    bus.publish(RunStart(run="r", kind="generate", model=MODEL, config={}, t0=0.0))
    for i in range(2000):
        bus.publish(Token(run="r", i=i, id=i, text=f"<{i}>", ms=float(i)))
    bus.publish(RunEnd(run="r", status="ok", metrics=RunMetrics(tokens=2000)))
    bridge.flush()
    items = _tokens(sent)
    assert [it["i"] for it in items] == list(range(2000))
    token_messages = [m for m in sent if m["type"] == "tokens"]
    assert len(token_messages) <= 2000 // 100, f"{len(token_messages)} messages for 2000 tokens: not batched"
    assert sent[0]["type"] == "run.start" and sent[-1]["type"] == "run.end"
    for m in sent:  # everything on the wire is valid protocol
        from_message(m)


def test_fast_training_steps_are_batched_complete_and_in_order_with_evals(wire):
    """One message per step flooded IOPub (the cell's idle status was lost): steps travel as
    ``train.steps`` batches, and an eval or checkpoint follows exactly the steps published before it."""
    from aigc_lab.events import TrainEval, TrainStep

    bus, bridge, sent = wire
    bus.publish(RunStart(run="t", kind="train", model=MODEL, config={}, t0=0.0))
    for s in range(1, 2001):
        bus.publish(TrainStep(run="t", step=s, loss=1.0 / s, lr=1e-4))
        if s % 100 == 0:
            bus.publish(TrainEval(run="t", step=s, val_loss=2.0 / s))
    bus.publish(RunEnd(run="t", status="ok"))
    bridge.flush()
    assert not [m for m in sent if m["type"] == "train.step"]
    batches = [m for m in sent if m["type"] == "train.steps"]
    assert 20 <= len(batches) <= 2000 // 50, f"{len(batches)} messages for 2000 steps: not batched"
    order = []  # the step numbers in wire order, evals marked
    for m in sent:
        if m["type"] == "train.steps":
            order += [it["step"] for it in m["items"]]
        elif m["type"] == "train.eval":
            order.append(("eval", m["step"]))
    expected = []
    for s in range(1, 2001):
        expected.append(s)
        if s % 100 == 0:
            expected.append(("eval", s))
    assert order == expected
    assert sent[0]["type"] == "run.start" and sent[-1]["type"] == "run.end"
    for m in sent:
        from_message(m)


def test_a_flood_of_short_messages_travels_in_a_few_batches_in_order(wire):
    """20 fast training runs, an eval every 100 steps: one comm message per event was 840 messages, and the
    browser, at about a millisecond each, drew no frame for 100-170 ms at a time. Batched, the same events
    arrive in publish order in a few dozen comm messages of at most ``max_batch`` items each."""
    from aigc_lab.events import TrainEval, TrainStep

    bus, bridge, sent = wire
    expected = []
    for r in range(20):
        run = f"t{r}"
        bus.publish(RunStart(run=run, kind="train", model=MODEL, config={}, t0=0.0))
        expected.append(("run.start", run))
        for s in range(1, 2001):
            bus.publish(TrainStep(run=run, step=s, loss=1.0 / s, lr=1e-4))
            expected.append(("step", run, s))
            if s % 100 == 0:
                bus.publish(TrainEval(run=run, step=s, val_loss=2.0 / s))
                expected.append(("eval", run, s))
        bus.publish(RunEnd(run=run, status="ok"))
        expected.append(("run.end", run))
    bridge.flush()
    order = []
    for m in sent:
        if m["type"] == "train.steps":
            order += [("step", m["run"], it["step"]) for it in m["items"]]
        elif m["type"] == "train.eval":
            order.append(("eval", m["run"], m["step"]))
        else:
            order.append((m["type"], m["run"]))
    assert order == expected
    assert len(sent.raw) <= 40000 // 512 + 20, f"{len(sent.raw)} comm messages for {len(sent)}: not batched"
    for m in sent.raw:
        inner = m["messages"] if m["type"] == "batch" else [m]
        assert sum(len(x.get("items", [None])) for x in inner) <= bridge.max_batch


def test_a_lone_event_after_a_quiet_spell_goes_alone(wire):
    bus, bridge, sent = wire
    time.sleep(2 * bridge.flush_interval)
    t = time.perf_counter()
    bus.publish(RunStart(run="q", kind="generate", model=MODEL, config={}, t0=0.0))
    while not sent and time.perf_counter() - t < 2.0:
        time.sleep(0.0005)
    assert [m["type"] for m in sent.raw] == ["run.start"]  # sent without a flush, alone: not wrapped in a batch


def test_a_lone_slow_token_is_still_delivered_promptly(wire):
    bus, bridge, sent = wire
    bus.publish(Token(run="s", i=0, id=0, text="x", ms=0.0))
    deadline = time.perf_counter() + 2.0
    while not _tokens(sent, "s") and time.perf_counter() < deadline:
        time.sleep(0.005)
    assert _tokens(sent, "s") == [{"i": 0, "id": 0, "text": "x", "ms": 0.0}]


def test_interleaved_runs_keep_each_runs_order(wire):
    bus, bridge, sent = wire
    for i in range(300):
        bus.publish(Token(run="a", i=i, id=i, text="a", ms=0.0))
        bus.publish(Token(run="b", i=i, id=i, text="b", ms=0.0))
    bridge.flush()
    assert [it["i"] for it in _tokens(sent, "a")] == list(range(300))
    assert [it["i"] for it in _tokens(sent, "b")] == list(range(300))


def test_cancel_request_stops_a_live_run_and_is_acknowledged(wire):
    _bus, bridge, sent = wire
    flag = runs.register("live-1")
    try:
        reply = bridge.handle_incoming({"v": 1, "type": "cancel", "run": "live-1", "id": "req-1"})
    finally:
        runs.unregister("live-1")
    assert flag.is_set()
    assert reply == {"v": 1, "type": "ack", "run": "live-1", "id": "req-1", "ok": True, "error": None}
    assert sent[-1] == reply


def test_cancel_of_unknown_run_is_refused_in_the_ack(wire):
    _bus, bridge, _sent = wire
    reply = bridge.handle_incoming({"v": 1, "type": "cancel", "run": "nope", "id": "req-2"})
    assert reply["ok"] is False and "not running" in reply["error"]


@pytest.mark.parametrize("data", [
    {"v": 1, "type": "exec", "run": None, "code": "import os"},
    {"type": "cancel", "run": "x", "id": "1"},
    "not even an object",
    {"v": 1, "type": "tokens", "run": "x", "items": []},  # valid, but not something the panel may send
])
def test_malformed_or_unexpected_messages_are_logged_and_ignored(wire, caplog, data):
    _bus, bridge, sent = wire
    with caplog.at_level(logging.WARNING, logger="aigc_lab"):
        assert bridge.handle_incoming(data) is None
    assert "ignored" in caplog.text and sent == []


def test_a_dead_comm_does_not_break_publishing(caplog):
    bus = EventBus()

    def send(_msg):
        raise OSError("comm closed")

    bridge = CommBridge(send, event_bus=bus)
    with caplog.at_level(logging.WARNING, logger="aigc_lab"):
        bus.publish(RunEnd(run="r", status="ok"))
    bridge.close()
    assert "could not send" in caplog.text


def test_history_request_is_acked_then_replays_recorded_runs():
    from aigc_lab.bus import Recorder
    from aigc_lab.events import TrainStep

    bus, rec, sent = EventBus(), Recorder(), Wire()
    bus.subscribe(rec)
    bus.publish(RunStart(run="g", kind="generate", model=MODEL, config={}, t0=0.0))
    for i in range(1200):
        bus.publish(Token(run="g", i=i, id=i, text="x", ms=float(i)))
    bus.publish(RunEnd(run="g", status="cancelled", metrics=RunMetrics(tokens=1200)))
    bus.publish(RunStart(run="t", kind="train", model=MODEL, config={}, t0=0.0))
    for step in range(1, 1101):
        bus.publish(TrainStep(run="t", step=step, loss=3.0, lr=1e-3))
    bridge = CommBridge(sent.append, event_bus=EventBus(), history=rec)
    try:
        reply = bridge.handle_incoming({"v": 1, "type": "history", "run": None, "id": "h1"})
    finally:
        bridge.close()
    assert reply == {"v": 1, "type": "ack", "run": None, "id": "h1", "ok": True, "error": None}
    assert sent[0] == reply
    kinds = [(m["type"], m["run"]) for m in sent[1:]]
    assert kinds[0] == ("run.start", "g") and kinds[-1] == ("train.steps", "t")
    steps = [m for m in sent if m["type"] == "train.steps"]
    assert [it["step"] for m in steps for it in m["items"]] == list(range(1, 1101))
    assert len(steps) == 3 and all(len(m["items"]) <= 512 for m in steps)  # 512 + 512 + 76
    assert [it["i"] for it in _tokens(sent, "g")] == list(range(1200))
    assert all(len(m["items"]) <= 512 for m in sent if m["type"] == "tokens")
    assert ("run.end", "g") in kinds and ("run.end", "t") not in kinds  # the train run is still going
    for m in sent:
        from_message(m)


def test_with_no_panel_listening_nothing_is_sent_until_the_first_request():
    """The comm the kernel opens stays quiet (events are only recorded) until a panel asks for history;
    the replay then carries what ran before, and live events follow it."""
    from aigc_lab.bus import Recorder

    bus, rec, sent = EventBus(), Recorder(), Wire()
    bus.subscribe(rec)
    bridge = CommBridge(sent.append, event_bus=bus, history=rec, live=False)
    try:
        bus.publish(RunStart(run="early", kind="generate", model=MODEL, config={}, t0=0.0))
        for i in range(300):
            bus.publish(Token(run="early", i=i, id=i, text="a", ms=float(i)))
        bridge.flush()
        time.sleep(0.05)
        assert sent == [] and bridge.messages_sent == 0
        bridge.handle_incoming({"v": 1, "type": "history", "run": None, "id": "h"})
        assert sent[0]["type"] == "ack"
        assert [it["i"] for it in _tokens(sent, "early")] == list(range(300))  # replayed
        for i in range(300, 600):
            bus.publish(Token(run="early", i=i, id=i, text="a", ms=float(i)))
        bus.publish(RunEnd(run="early", status="ok", metrics=RunMetrics(tokens=600)))
        bridge.flush()
    finally:
        bridge.close()
    assert [it["i"] for it in _tokens(sent, "early")] == list(range(600))  # then live, in order
    assert sent[-1]["type"] == "run.end"


def test_a_cancel_request_also_makes_the_comm_live():
    bus, sent = EventBus(), Wire()
    bridge = CommBridge(sent.append, event_bus=bus, live=False)
    try:
        bridge.handle_incoming({"v": 1, "type": "cancel", "run": "nope", "id": "c"})
        bus.publish(RunStart(run="later", kind="generate", model=MODEL, config={}, t0=0.0))
    finally:
        bridge.close()
    assert [m["type"] for m in sent] == ["ack", "run.start"]


# -- pathological messages from the panel -------------------------------------------------------


def nested(depth: int, kind: str = "list"):
    """A value nested ``depth`` levels deep, built without recursion (as a JSON parser would hand it over)."""
    value: object = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


DEEP_LIST, DEEP_DICT = nested(10_000), nested(10_000, "dict")
HUGE = "x" * 10_000_000
PATHOLOGICAL = {
    "deep list id": {"v": 1, "type": "cancel", "run": "r", "id": DEEP_LIST},
    "deep dict run": {"v": 1, "type": "cancel", "run": DEEP_DICT, "id": "1"},
    "deep type": {"v": 1, "type": DEEP_LIST, "run": "r", "id": "1"},
    "deep dict as type": {"v": 1, "type": DEEP_DICT, "run": None, "id": "1"},
    "deep version": {"v": DEEP_DICT, "type": "history", "run": None, "id": "1"},
    "deep top level": DEEP_LIST,
    "huge type": {"v": 1, "type": HUGE, "run": "r", "id": "1"},
    "huge run": {"v": 1, "type": "cancel", "run": HUGE, "id": "1"},
    "huge id": {"v": 1, "type": "history", "run": None, "id": HUGE},
    "huge string message": HUGE,
    "nan version": {"v": float("nan"), "type": "cancel", "run": "r", "id": "1"},
    "inf version": {"v": float("inf"), "type": "cancel", "run": "r", "id": "1"},
    "1e400 id": {"v": 1, "type": "cancel", "run": "r", "id": float("1e400")},
    "huge int version": {"v": 10**5000, "type": "cancel", "run": "r", "id": "1"},
    "huge negative int version": {"v": -(10**5000), "type": "cancel", "run": "r", "id": "1"},
    "huge int id": {"v": 1, "type": "cancel", "run": "r", "id": 10**5000},
    "bool version": {"v": True, "type": "cancel", "run": "r", "id": "1"},
    "int id": {"v": 1, "type": "cancel", "run": "r", "id": 7},
    "list run": {"v": 1, "type": "cancel", "run": ["r"], "id": "1"},
    "history with a run": {"v": 1, "type": "history", "run": "r", "id": "1"},
    "missing id": {"v": 1, "type": "cancel", "run": "r"},
    "missing run": {"v": 1, "type": "cancel", "id": "1"},
    "missing type": {"v": 1, "run": "r", "id": "1"},
    "empty object": {},
    "none": None,
    "number": 3.5,
    "list": [{"v": 1, "type": "cancel", "run": "r", "id": "1"}],
    "bytes": b"\x00\xff",
    "non-string keys": {1: 2, None: 3},
    "code": {"v": 1, "type": "exec", "run": None, "code": "raise SystemExit('executed')"},
    "newer version": {"v": 2, "type": "cancel", "run": "r", "id": "1", "note": "x\ny" * 1000},
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_messages_are_logged_in_one_short_line_and_ignored(wire, caplog, name):
    _bus, bridge, sent = wire
    flag = runs.register("live-p")
    try:
        with caplog.at_level(logging.DEBUG, logger="aigc_lab"):
            assert bridge.handle_incoming(PATHOLOGICAL[name]) is None
        records = [r for r in caplog.records if r.name == "aigc_lab"]
        assert len(records) == 1, [r.getMessage()[:100] for r in records]
        line = records[0].getMessage()
        assert line.startswith("aigc_lab: ignored") and len(line) < 300 and "\n" not in line, line[:400]
        assert records[0].exc_info is None and records[0].levelno == logging.WARNING
        assert sent == [] and not flag.is_set()
        # the bridge still answers what follows
        cancel = bridge.handle_incoming({"v": 1, "type": "cancel", "run": "live-p", "id": "after"})
        history = bridge.handle_incoming({"v": 1, "type": "history", "run": None, "id": "h-after"})
    finally:
        runs.unregister("live-p")
    assert flag.is_set()
    assert cancel == {"v": 1, "type": "ack", "run": "live-p", "id": "after", "ok": True, "error": None}
    assert history == {"v": 1, "type": "ack", "run": None, "id": "h-after", "ok": True, "error": None}
    assert sent[0] == cancel and history in sent


@pytest.mark.parametrize("name", [n for n in PATHOLOGICAL if n not in ("huge run", "huge id")])  # valid protocol
def test_from_message_rejects_each_with_a_short_protocol_error(name):
    with pytest.raises(ProtocolError) as info:
        from_message(PATHOLOGICAL[name])
    assert 0 < len(str(info.value)) < 300


def test_error_messages_describe_bad_values_briefly():
    def error(msg):
        with pytest.raises(ProtocolError) as info:
            from_message(msg)
        return str(info.value)

    assert "'xxxx" in error(PATHOLOGICAL["huge type"]) and "10000000 characters" in error(PATHOLOGICAL["huge type"])
    assert "an array of 1 item(s)" in error(PATHOLOGICAL["deep list id"])
    assert "an integer of 16610 bits" in error(PATHOLOGICAL["huge int id"])
    assert "inf" in error(PATHOLOGICAL["1e400 id"]) and "nan" in error(PATHOLOGICAL["nan version"])
    assert "field 'id' has an invalid value 7" in error(PATHOLOGICAL["int id"])


def test_ids_too_long_to_echo_are_ignored(wire, caplog):
    _bus, bridge, sent = wire
    with caplog.at_level(logging.WARNING, logger="aigc_lab"):
        assert bridge.handle_incoming({"v": 1, "type": "cancel", "run": "r" * (MAX_ID + 1), "id": "1"}) is None
        assert bridge.handle_incoming({"v": 1, "type": "history", "run": None, "id": "i" * (MAX_ID + 1)}) is None
    assert sent == [] and caplog.text.count("longer than 256 characters") == 2
    reply = bridge.handle_incoming({"v": 1, "type": "cancel", "run": "r" * MAX_ID, "id": "i" * MAX_ID})
    assert reply is not None and reply["id"] == "i" * MAX_ID and reply["ok"] is False


def test_an_unexpected_failure_while_handling_is_one_line_not_a_traceback(wire, caplog, monkeypatch):
    _bus, bridge, _sent = wire

    def broken(_run):
        raise RuntimeError("boom\n" * 1000)

    monkeypatch.setattr(runs, "cancel", broken)
    with caplog.at_level(logging.WARNING, logger="aigc_lab"):
        assert bridge.handle_incoming({"v": 1, "type": "cancel", "run": "r", "id": "1"}) is None
    (record,) = caplog.records
    assert record.exc_info is None and record.getMessage() == (
        "aigc_lab: ignored a message from the panel that could not be handled (RuntimeError)")


def test_comm_messages_without_data_reach_the_bridge_as_none():
    assert _data_of({"content": {"data": {"v": 1}}}) == {"v": 1}
    assert _data_of({"content": {}}) is None and _data_of({}) is None and _data_of(None) is None
    assert _data_of({"content": "not an object"}) is None
