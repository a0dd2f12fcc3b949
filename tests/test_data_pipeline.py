"""Split, templates, token statistics, the sample corpora, and the DataStep events of a whole pipeline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import aigc_lab as al
from aigc_lab import events
from aigc_lab.bus import EventBus
from aigc_lab.data import samples
from aigc_lab.errors import DataError


@pytest.fixture(scope="module")
def tokenizer():
    """A small BPE tokenizer trained here (no download): whitespace pre-tokenizer, 512 tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(samples.python_docs(), trainers.BpeTrainer(vocab_size=512, show_progress=False,
                                                                      special_tokens=["[UNK]"]))
    return tok


def dates_ds(n=200, seed=0, event_bus=None):
    return al.data.load(samples.dates(n, seed), event_bus=event_bus or EventBus())


# -- split ---------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_complete():
    ds = dates_ds(200)
    s1, s2, s3 = ds.split(val=0.1, test=0.2, seed=0), ds.split(val=0.1, test=0.2, seed=0), ds.split(0.1, 0.2, seed=1)
    assert s1.sizes() == {"train": 140, "val": 20, "test": 40} and sum(s1.sizes().values()) == len(ds)
    ids = {name: set(d.df["source_row"]) for name, d in zip(("train", "val", "test"), s1, strict=True)}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert ids["train"] | ids["val"] | ids["test"] == set(range(200))
    assert s1.val.df.equals(s2.val.df) and not s1.val.df.equals(s3.val.df)
    assert s1["train"] is s1.train and repr(s1) == "Splits(train=140, val=20, test=40)"


def test_split_keeps_augmented_copies_with_their_source():
    ds = dates_ds(100).augment(word_swap=0.5, paraphrase=True, copies=3, seed=0)
    assert ds.df["augmented"].sum() > 100
    train, val, test = ds.split(val=0.2, test=0.2, seed=5)
    for part in (val, test):
        assert not set(part.df["source_row"]) & set(train.df["source_row"])
    assert len(train) + len(val) + len(test) == len(ds)
    assert len(val.prompts(100)) == val.df["augmented"].eq(False).sum()  # prompts skip augmented rows


def test_split_rejects_bad_fractions():
    with pytest.raises(DataError, match="nothing to train"):
        dates_ds(10).split(val=0.5, test=0.5)
    with pytest.raises(DataError, match="fraction"):
        dates_ds(10).split(val=-0.1)


def test_tiny_split_never_empties_a_requested_part():
    s = dates_ds(5).split(val=0.1, test=0.1, seed=0)
    assert s.sizes() == {"train": 3, "val": 1, "test": 1}


# -- templates -----------------------------------------------------------------------------------


def test_templates():
    text = al.data.load(["first text", "second text"], event_bus=EventBus())
    assert text.template("plain") == ["first text", "second text"]
    assert text.template("plain", eos="</s>")[0] == "first text</s>"
    pairs = al.data.load(pd.DataFrame({"input": ["March 3, 2021"], "target": ["2021-03-03"]}), event_bus=EventBus())
    assert pairs.template("seq2seq") == [("March 3, 2021", "2021-03-03")]
    assert pairs.template("plain") == ["March 3, 2021\n2021-03-03"]
    assert pairs.template("instruction") == ["### Instruction:\nMarch 3, 2021\n\n### Response:\n2021-03-03"]
    assert pairs.template("instruction", instruction="Normalize the date.") == [
        "### Instruction:\nNormalize the date.\n\n### Input:\nMarch 3, 2021\n\n### Response:\n2021-03-03"]
    alpaca = al.data.load([{"instruction": "Add", "input": "2 and 3", "output": "5"},
                           {"instruction": "Say hi", "input": "", "output": "hi"}], event_bus=EventBus())
    assert alpaca.template("instruction") == [
        "### Instruction:\nAdd\n\n### Input:\n2 and 3\n\n### Response:\n5",
        "### Instruction:\nSay hi\n\n### Response:\nhi"]
    assert alpaca.prompts(1, template="instruction") == [
        "### Instruction:\nAdd\n\n### Input:\n2 and 3\n\n### Response:\n"]
    with pytest.raises(DataError, match="seq2seq needs"):
        text.template("seq2seq")
    with pytest.raises(DataError, match="unknown template"):
        text.template("chat")


# -- token statistics ----------------------------------------------------------------------------


def test_token_stats_table_truncation_and_plot(tokenizer):
    ds = al.data.load(["a " * 10, "a " * 50, "a " * 200, "a " * 5], event_bus=EventBus())  # 1 token per "a"
    stats = ds.token_stats(tokenizer, max_length=40)
    row = stats.table.loc["text"]
    assert row["count"] == 4 and row["max"] == 200 and row["tokens_total"] == 265
    assert row["truncated"] == 2 and stats.truncation_rate == 0.5 and row["p50"] == 30
    fig = stats.plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert any(np.allclose(line.get_xdata(), [40, 40]) for line in ax.get_lines())  # the max_length line
    assert "50.0% truncated" in ax.get_legend().get_texts()[0].get_text()


def test_token_stats_of_pairs_and_with_hf_tokenizer(tokenizer):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")
    ds = dates_ds(50)
    stats = ds.token_stats(hf, max_length=4, max_target_length=64)
    assert list(stats.table.index) == ["input", "target"]
    assert stats.table.loc["target", "truncation_rate"] == 0.0 and stats.table.loc["input", "truncation_rate"] > 0
    lengths = [len(tokenizer.encode(t).ids) for t in ds.df["input"]]
    assert stats.table.loc["input", "max"] == max(lengths)
    assert len(stats.plot().axes) == 2


def test_clean_by_token_length_with_a_trained_tokenizer(tokenizer):
    ds = al.data.load(["a " * 3, "a " * 30], event_bus=EventBus())
    assert ds.clean(max_tokens=10, tokenizer=tokenizer).df["text"].tolist() == ["a a a"]


# -- samples -------------------------------------------------------------------------------------


def test_dates_task_is_deterministic_and_varied():
    a, b, c = samples.dates(500, seed=0), samples.dates(500, seed=0), samples.dates(500, seed=1)
    assert a.equals(b) and not a.equals(c) and list(a.columns) == ["input", "target"]
    assert a["target"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    shapes = {pd.Series([x]).str.replace(r"\d", "0", regex=True)[0].split(" ")[0] for x in a["input"]}
    assert len(shapes) >= 15  # many distinct surface forms
    assert a["input"].nunique() > 480


def test_dates_are_correct():
    import datetime as dt

    for inp, tgt in samples.dates(300, seed=7).itertuples(index=False):
        d = dt.date.fromisoformat(tgt)
        if "(MM/DD/YYYY)" in inp:
            assert inp.startswith(f"{d.month:02d}/{d.day:02d}/{d.year}")
        elif "(DD/MM/YYYY)" in inp:
            assert inp.startswith(f"{d.day:02d}/{d.month:02d}/{d.year}")
        elif "," in inp and inp.split(",")[0] in samples.WEEKDAYS:
            assert inp.split(",")[0] == samples.WEEKDAYS[d.weekday()]
        assert str(d.year) in inp or f"{d.year}{d.month:02d}{d.day:02d}" in inp


def test_date_accuracy():
    assert samples.date_accuracy(["2021-03-03", " 1999-01-01\n", "2000-01-02"],
                                 ["2021-03-03", "1999-01-01", "2000-01-01"]) == pytest.approx(2 / 3)
    with pytest.raises(DataError, match="2 predictions for 1 targets"):
        samples.date_accuracy(["a", "b"], ["a"])


def test_python_docs_as_a_dataset():
    ds = samples.python_docs_dataset(event_bus=EventBus())
    assert ds.kind == "text" and len(ds) == len(samples.python_docs()) > 50


# -- events --------------------------------------------------------------------------------------


def test_every_step_publishes_a_jsonable_data_step(tokenizer, tmp_path):
    path = tmp_path / "reviews.jsonl"
    rows = ['{"text": "<b>Great</b> phone, love the screen and the battery."}',
            '{"text": "<b>Great</b> phone, love the screen and the battery."}',
            "broken",
            '{"text": "!!!! ???? ####"}',
            '{"text": "Summarize: the battery lasts two days and charging is quick."}']
    path.write_text("\n".join(rows) + "\n")
    bus = EventBus()
    seen: list = []
    bus.subscribe(seen.append)
    with pytest.warns(al.data.BadRowsWarning):
        ds = al.data.load(path, event_bus=bus, skip_bad_rows=True)
    ds = ds.clean(strip_html=True, max_symbol_ratio=0.5, near_dedupe=0.9)
    ds = ds.augment(paraphrase=True, seed=0)
    splits = ds.split(val=0.0, test=0.5, seed=0)
    splits.train.template("plain")
    splits.train.token_stats(tokenizer, max_length=8)

    assert all(isinstance(e, events.DataStep) for e in seen)
    assert len({e.run for e in seen}) == 1 and seen[0].run.startswith("data-")
    by = {e.step: e for e in seen}
    assert [e.step for e in seen] == ["load", "strip_html", "normalize", "symbols", "dedupe", "near_dedupe",
                                      "augment", "split", "template", "token_stats"]
    assert (by["load"].rows_in, by["load"].rows_out, by["load"].detail["skipped_bad_rows"]) == (5, 4, 1)
    assert by["load"].detail["file"] == str(path)
    assert by["strip_html"].changed == 2
    assert by["symbols"].detail["removed"] == {"mostly_symbols": 1}
    assert by["dedupe"].detail["removed"] == {"duplicate": 1} and by["dedupe"].rows_out == 2
    assert by["augment"].detail["added"] == 1 and by["augment"].rows_out == 3
    assert by["split"].detail["sizes"] == {"val": 0, "test": 2, "train": 1} or by["split"].detail["sizes"] == {
        "val": 0, "test": 1, "train": 2}
    assert splits.train.report[-1].step == "token_stats" and splits.test.report[-1].step == "split"
    for e in seen:
        msg = events.to_message(e)
        assert json.loads(json.dumps(msg)) == msg
        assert events.from_message(msg) == e
    assert list(ds.report.to_frame()["step"])[:2] == ["load", "strip_html"]


def test_default_bus_receives_events():
    seen: list = []
    unsubscribe = al.bus.subscribe(seen.append)
    try:
        al.data.load(["one text"])
    finally:
        unsubscribe()
    assert [e.step for e in seen] == ["load"]
