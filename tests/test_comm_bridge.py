"""The comm sink: batching (fewer messages than tokens, none lost, in order), cancel/ack, bad input."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from aigc_lab import runs
from aigc_lab.bus import EventBus
from aigc_lab.events import ModelInfo, RunEnd, RunMetrics, RunStart, Token, from_message
from aigc_lab.jupyter.comm_bridge import CommBridge

MODEL = ModelInfo(name="m", params=1, dtype="float32", quant=None, device="cpu")


@pytest.fixture
def wire():
    bus, sent, lock = EventBus(), [], threading.Lock()

    def send(msg):
        with lock:
            sent.append(msg)

    bridge = CommBridge(send, event_bus=bus)
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
    items = _tokens(sent)
    assert [it["i"] for it in items] == list(range(2000))
    token_messages = [m for m in sent if m["type"] == "tokens"]
    assert len(token_messages) <= 2000 // 100, f"{len(token_messages)} messages for 2000 tokens: not batched"
    assert sent[0]["type"] == "run.start" and sent[-1]["type"] == "run.end"
    for m in sent:  # everything on the wire is valid protocol
        from_message(m)


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

    bus, rec, sent = EventBus(), Recorder(), []
    bus.subscribe(rec)
    bus.publish(RunStart(run="g", kind="generate", model=MODEL, config={}, t0=0.0))
    for i in range(1200):
        bus.publish(Token(run="g", i=i, id=i, text="x", ms=float(i)))
    bus.publish(RunEnd(run="g", status="cancelled", metrics=RunMetrics(tokens=1200)))
    bus.publish(RunStart(run="t", kind="train", model=MODEL, config={}, t0=0.0))
    bus.publish(TrainStep(run="t", step=1, loss=3.0, lr=1e-3))
    bridge = CommBridge(sent.append, event_bus=EventBus(), history=rec)
    try:
        reply = bridge.handle_incoming({"v": 1, "type": "history", "run": None, "id": "h1"})
    finally:
        bridge.close()
    assert reply == {"v": 1, "type": "ack", "run": None, "id": "h1", "ok": True, "error": None}
    assert sent[0] == reply
    kinds = [(m["type"], m["run"]) for m in sent[1:]]
    assert kinds[0] == ("run.start", "g") and kinds[-1] == ("train.step", "t")
    assert [it["i"] for it in _tokens(sent, "g")] == list(range(1200))
    assert all(len(m["items"]) <= 512 for m in sent if m["type"] == "tokens")
    assert ("run.end", "g") in kinds and ("run.end", "t") not in kinds  # the train run is still going
    for m in sent:
        from_message(m)


def test_with_no_panel_listening_nothing_is_sent_until_the_first_request():
    """The comm the kernel opens stays quiet (events are only recorded) until a panel asks for history;
    the replay then carries what ran before, and live events follow it."""
    from aigc_lab.bus import Recorder

    bus, rec, sent, lock = EventBus(), Recorder(), [], threading.Lock()
    bus.subscribe(rec)

    def send(msg):
        with lock:
            sent.append(msg)

    bridge = CommBridge(send, event_bus=bus, history=rec, live=False)
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
    bus, sent = EventBus(), []
    bridge = CommBridge(sent.append, event_bus=bus, live=False)
    try:
        bridge.handle_incoming({"v": 1, "type": "cancel", "run": "nope", "id": "c"})
        bus.publish(RunStart(run="later", kind="generate", model=MODEL, config={}, t0=0.0))
    finally:
        bridge.close()
    assert [m["type"] for m in sent] == ["ack", "run.start"]
