"""Protocol v1: the shared fixtures are accepted/rejected exactly as the TS side does, and docs match code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aigc_lab import events
from aigc_lab.errors import AigcLabError, ProtocolError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "protocol"
VALID = sorted((FIXTURES / "valid").glob("*.json"))
INVALID = sorted((FIXTURES / "invalid").glob("*.json"))


def test_fixture_folders_are_not_empty():
    assert len(VALID) >= 10 and len(INVALID) >= 8


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_fixture_is_accepted_and_round_trips(path):
    msg = json.loads(path.read_text(encoding="utf-8"))
    event = events.from_message(msg)
    assert events.to_message(event) == msg


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_fixture_is_rejected(path):
    msg = json.loads(path.read_text(encoding="utf-8"))
    with pytest.raises(ProtocolError) as info:
        events.from_message(msg)
    assert isinstance(info.value, AigcLabError) and str(info.value)


def test_every_message_type_has_a_valid_fixture():
    seen = {json.loads(p.read_text(encoding="utf-8"))["type"] for p in VALID}
    assert seen == set(events._SPECS)


def test_every_message_type_is_documented():
    doc = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    for kind in events._SPECS:
        assert f"### `{kind}`" in doc, f"docs/protocol.md does not document {kind!r}"
    assert f"version {events.PROTOCOL_VERSION}" in doc


def test_ts_mirror_declares_the_same_version_and_types():
    ts = (ROOT / "src" / "protocol.ts").read_text(encoding="utf-8")
    assert f"PROTOCOL_VERSION = {events.PROTOCOL_VERSION}" in ts
    for kind in events._SPECS:
        assert f"'{kind}'" in ts or f'"{kind}"' in ts, f"src/protocol.ts lacks message type {kind!r}"


def test_single_token_encodes_as_a_one_item_batch():
    msg = events.to_message(events.Token(run="r", i=0, id=7, text="a", ms=1.5))
    assert msg == {"v": 1, "type": "tokens", "run": "r", "items": [{"i": 0, "id": 7, "text": "a", "ms": 1.5}]}


def test_messages_are_json_serialisable():
    end = events.RunEnd(run="r", status="ok", metrics=events.RunMetrics(ttft_ms=1.0, tokens=3, tok_s=2.0))
    assert json.loads(json.dumps(events.to_message(end)))["metrics"]["tokens"] == 3


def test_bool_is_not_an_integer():
    with pytest.raises(ProtocolError):
        events.from_message({"v": 1, "type": "checkpoint", "run": "r", "step": True, "path": "p"})


def test_chat_config_is_checked_when_present():
    start = json.loads((FIXTURES / "valid" / "run_start_chat.json").read_text(encoding="utf-8"))
    assert events.from_message(start).config["chat"]["template"] == "chatml"
    plain = {**start, "config": {"max_new_tokens": 8}}  # a run without chat: nothing to check
    assert "chat" not in events.from_message(plain).config

    def bad(chat):
        with pytest.raises(ProtocolError) as info:
            events.from_message({**start, "config": {"chat": chat}})
        return str(info.value)

    assert "run.start.config.chat must be an object" in bad(["user", "Hi"])
    assert bad({"messages": []}) == "run.start.config.chat: missing field 'template'"
    assert "field 'template'" in bad({"messages": [], "template": 3})
    assert "run.start.config.chat.messages[1] must be an object" in bad(
        {"messages": [{"role": "user", "content": "a"}, "b"], "template": "plain"})
    assert "messages[0]: field 'role' has an invalid value 'robot'" in bad(
        {"messages": [{"role": "robot", "content": "a"}], "template": "plain"})
    assert "messages[0]: missing field 'content'" in bad({"messages": [{"role": "user"}], "template": "plain"})
