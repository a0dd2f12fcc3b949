"""Conversation data: OpenAI messages, ShareGPT and Alpaca from jsonl/json/parquet; bad rows; clean, dedupe, split."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import aigc_lab as al
from aigc_lab.data import BadRowsWarning
from aigc_lab.errors import ConversationError, DataError

HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
SUM = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
       {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"},
       {"role": "assistant", "content": "6"}]


def jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_openai_messages_jsonl_is_detected(tmp_path):
    ds = al.data.load(jsonl(tmp_path / "chat.jsonl", [{"messages": HI, "id": 1}, {"messages": SUM, "id": 2}]))
    assert ds.kind == "chat" and ds.roles == {"messages": "messages"} and len(ds) == 2
    assert ds.conversations() == [HI, SUM]
    assert ds.df["id"].tolist() == [1, 2]  # other columns are kept
    load = ds.report[0]
    assert load.step == "load" and load.detail["layout"] == "messages" and load.detail["turns"] == 7


def test_sharegpt_json_with_role_aliases(tmp_path):
    rows = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2+2?"},
                               {"from": "gpt", "value": "4"}, {"from": "human", "value": "And 3+3?"},
                               {"from": "chatgpt", "value": "6"}]},
            {"conversations": [{"from": "user", "value": "weather?"}, {"from": "function_call", "value": "get()"},
                               {"from": "observation", "value": "sunny"}, {"from": "model", "value": "Sunny."}]}]
    (tmp_path / "sg.json").write_text(json.dumps(rows), encoding="utf-8")
    ds = al.data.load(tmp_path / "sg.json")
    assert ds.kind == "chat" and ds.report[0].detail["layout"] == "sharegpt"
    first, second = ds.conversations()
    assert first == SUM
    assert [t["role"] for t in second] == ["user", "assistant", "tool", "assistant"]  # tool turns kept as text


def test_parquet_and_told_format(tmp_path):
    pd.DataFrame({"messages": [HI, SUM]}).to_parquet(tmp_path / "c.parquet")
    assert al.data.load(tmp_path / "c.parquet").conversations() == [HI, SUM]
    # ShareGPT turns under a column named "messages", told: from/value keys are read too
    sg = [{"messages": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}]
    assert al.data.load(jsonl(tmp_path / "m2.jsonl", sg), format="messages").conversations() == [HI]


def test_alpaca_only_when_told_with_history(tmp_path):
    rows = [{"instruction": "Add the numbers", "input": "2 and 3", "output": "5"},
            {"instruction": "Name a colour", "input": "", "output": "red", "system": "Be brief.",
             "history": [["Hi", "Hello!"]]}]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    assert al.data.load(path).kind == "pairs"  # instruction/output columns stay pairs unless told
    ds = al.data.load(path, format="alpaca")
    assert ds.kind == "chat"
    a, b = ds.conversations()
    assert a == [{"role": "user", "content": "Add the numbers\n\n2 and 3"}, {"role": "assistant", "content": "5"}]
    assert b == [{"role": "system", "content": "Be brief."}, *HI, {"role": "user", "content": "Name a colour"},
                 {"role": "assistant", "content": "red"}]


def test_list_of_dicts_and_content_parts():
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}, {"role": "assistant", "content": "Hello!"}]
    assert al.data.load([{"messages": parts}]).conversations() == [HI]


@pytest.mark.parametrize(("turns", "says"), [
    ([{"role": "user", "content": "Hi"}, {"role": "robot", "content": "beep"}], "unknown role 'robot'"),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A"}, {"role": "assistant", "content": "B"}],
     "two assistant turns in a row"),
    ([{"role": "user", "content": "  "}, {"role": "assistant", "content": "A"}], "turn 0 (user) has empty content"),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}], "turn 1 (assistant) has empty"),
    ([{"role": "user", "content": "Hi"}], "no assistant turn"),
    ([{"content": "Hi"}, {"role": "assistant", "content": "A"}], "has no 'role'"),
    (["Hi", {"role": "assistant", "content": "A"}], "turn 0 is a str, not an object"),
    ("Hi there", "not a list of turns"),
    ([], "empty list"),
])
def test_bad_rows_name_file_row_and_problem(tmp_path, turns, says):
    path = jsonl(tmp_path / "bad.jsonl", [{"messages": HI}, {"messages": turns}])
    with pytest.raises(ConversationError) as err:
        al.data.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}, line 2: ") and says in msg and "skip_bad_rows=True" in msg
    assert isinstance(err.value, DataError) and isinstance(err.value, al.AigcLabError)
    with pytest.warns(BadRowsWarning, match="skipped 1 bad row"):
        ds = al.data.load(path, skip_bad_rows=True)
    assert ds.conversations() == [HI] and ds.report[0].detail["skipped_bad_rows"] == 1


def test_wrong_layout_says_which_to_pass(tmp_path):
    path = jsonl(tmp_path / "c.jsonl", [{"messages": HI}])
    with pytest.raises(ConversationError, match="no 'conversations' field .*pass format='messages'"):
        al.data.load(path, format="sharegpt")
    with pytest.raises(DataError, match="none of its 1 rows is a usable conversation"):
        al.data.load(path, format="sharegpt", skip_bad_rows=True)


def test_clean_dedupe_and_split_keep_conversations_whole():
    rows = [{"messages": [{"role": "user", "content": f"Question  {i}\u200b"},
                          {"role": "assistant", "content": f"Answer {i}"}]} for i in range(20)]
    same = [{"role": "user", "content": "Question 3"}, {"role": "assistant", "content": "Answer 3"}]
    rows += [rows[3], {"messages": same}]
    ds = al.data.load(rows)
    cleaned = ds.clean(dedupe=True, min_chars=5)
    steps = {e.step: e for e in cleaned.report}
    assert steps["normalize"].changed == 21  # double space and zero-width space, in every user turn
    assert steps["dedupe"].detail["removed"] == {"duplicate": 2}  # the copy, and the one equal after normalising
    assert len(cleaned) == 20 and cleaned.conversations()[3][0]["content"] == "Question 3"
    train, val, test = cleaned.split(val=0.2, test=0.1, seed=1)
    convs = [tuple(json.dumps(c) for c in part.conversations()) for part in (train, val, test)]
    assert sum(map(len, convs)) == 20 and len(val) == 4 and len(test) == 2
    assert not set(convs[0]) & set(convs[1]) and not set(convs[0]) & set(convs[2])  # a conversation is in one split
    assert all(len(c) == 2 for part in (train, val, test) for c in part.conversations())  # never cut


def test_a_cleaned_away_turn_removes_its_conversation():
    ds = al.data.load([{"messages": [{"role": "user", "content": "<b></b>"}, {"role": "assistant", "content": "x"}]},
                       {"messages": HI}])
    out = ds.clean(strip_html=True)
    steps = {e.step: e for e in out.report}
    assert out.conversations() == [HI] and steps["strip_html"].detail["removed"] == {"empty": 1}


def test_prompts_and_text_templates_for_conversations():
    ds = al.data.load([{"messages": SUM}])
    assert ds.prompts(1) == [SUM[:4]]
    with pytest.raises(DataError, match="chat template"):
        ds.template("plain")
    assert ds.combined_text()[0] == "Be brief.\n2+2?\n4\nAnd 3+3?\n6"


def test_catalogue_chats_are_exact_and_reproducible():
    rows = al.data.samples.catalogue_chats(50, seed=3)
    assert rows == al.data.samples.catalogue_chats(50, seed=3)
    table = al.data.samples.catalogue(12, seed=3)
    ds = al.data.load(rows)
    assert len(ds) == 50 and ds.kind == "chat"
    values = set(table.colour) | set(table.price) | set(table.stock)
    assert all(t["content"] in values for c in ds.conversations() for t in c if t["role"] == "assistant")
    convs = ds.conversations()
    answers = [[t for t in c if t["role"] == "assistant"][-1]["content"] for c in convs]
    assert al.data.samples.chat_accuracy(answers, convs) == 1.0
    assert al.data.samples.chat_accuracy(["nope"] * 50, convs) == 0.0
