"""Cleaning steps (counts per step), near-duplicate removal, the symbol filter, and augmentation."""

from __future__ import annotations

import random

import pandas as pd
import pytest

import aigc_lab as al
from aigc_lab.bus import EventBus
from aigc_lab.data.cleaning import normalize_text, strip_html, symbol_ratio
from aigc_lab.data.near_dup import near_duplicates
from aigc_lab.errors import DataError


def make(texts, **kw):
    return al.data.load(pd.DataFrame({"text": texts}), event_bus=EventBus(), **kw)


def steps(ds):
    return {ev.step: ev for ev in ds.report}


def test_normalize_counts_changed_rows():
    ds = make(["ｆｕｌｌ　ｗｉｄｔｈ", "tabs\tand   spaces ", "already clean", "zero\u200bwidth", "ﬁne ligature"])
    out = ds.clean(dedupe=False)
    assert out.df["text"].tolist() == ["full width", "tabs and spaces", "already clean", "zerowidth", "fine ligature"]
    ev = steps(out)["normalize"]
    assert (ev.rows_in, ev.rows_out, ev.changed) == (5, 5, 4)
    assert normalize_text("a\r\n\n\n\nb  \n  c") == "a\n\nb\nc"


def test_strip_html_counts_and_drops_rows_left_empty():
    ds = make(["<p>Hello <b>world</b> &amp; friends</p>", "<script>alert(1)</script><style>p{}</style>",
               "no tags, 3 < 4", "caf&eacute; &#x263A;"])
    out = ds.clean(strip_html=True, normalize=False, dedupe=False)
    assert out.df["text"].tolist() == ["Hello world & friends", "no tags, 3 < 4", "café ☺"]
    ev = steps(out)["strip_html"]
    assert (ev.rows_in, ev.rows_out, ev.changed, ev.detail["removed"]) == (4, 3, 2, {"empty": 1})
    assert strip_html("<div>a</div><div>b</div>") == "a\nb"


def test_lower_and_exact_dedupe():
    ds = make(["Hello World", "hello world", "HELLO   WORLD", "Other"])
    out = ds.clean(lower=True)
    assert out.df["text"].tolist() == ["hello world", "other"]
    s = steps(out)
    assert s["lower"].changed == 3 and s["normalize"].changed == 1
    assert s["dedupe"].detail["removed"] == {"duplicate": 2} and (s["dedupe"].rows_in, s["dedupe"].rows_out) == (4, 2)


def test_dedupe_of_pairs_uses_input_and_target():
    df = pd.DataFrame({"q": ["a", "a", "a"], "a": ["x", "x", "y"]})
    out = al.data.load(df, input="q", target="a", event_bus=EventBus()).clean()
    assert out.df["a"].tolist() == ["x", "y"]


def test_length_filters_in_characters_and_tokens():
    ds = make(["tiny", "a reasonable sentence here", "x" * 60, "another fine sentence"])
    out = ds.clean(min_chars=10, max_chars=50)
    ev = steps(out)["length_chars"]
    assert ev.detail["removed"] == {"too_short": 1, "too_long": 1} and len(out) == 2

    def words(text):
        return text.split()

    out = ds.clean(min_tokens=2, max_tokens=3, tokenizer=words)
    ev = steps(out)["length_tokens"]
    assert out.df["text"].tolist() == ["another fine sentence"]
    assert ev.detail["removed"] == {"too_few_tokens": 2, "too_many_tokens": 1}
    with pytest.raises(DataError, match="tokenizer="):
        ds.clean(max_tokens=3)


def test_symbol_filter_is_language_agnostic():
    keep = ["日本語のテキストです。", "Привет, как дела?", "हिन्दी में पाठ", "مرحبا بالعالم", "plain English, fine."]
    drop = ["!!!!!!!!!!!", "$$$ ### @@@ %%%", "<<<>>>|||~~~ a"]
    out = make(keep + drop).clean(max_symbol_ratio=0.5)
    assert out.df["text"].tolist() == keep
    assert steps(out)["symbols"].detail["removed"] == {"mostly_symbols": 3}
    assert symbol_ratio("日本語") == 0.0 and symbol_ratio("") == 1.0 and symbol_ratio("a!") == 0.5


REVIEW = ("The new phone has a bright screen, a battery that easily lasts two days, and a camera that takes "
          "sharp pictures even in dim light; the only downside is the slippery back.")


def test_near_dedupe_catches_close_paraphrases_and_keeps_distinct_rows():
    near = [
        REVIEW,
        REVIEW.replace("bright", "brilliant"),                       # one word changed
        REVIEW.replace("two days", "2 days").replace(";", "."),     # small edits
        "  " + REVIEW.upper() + "  ",                                # case and spacing
    ]
    distinct = [
        "The new phone has a dim screen and a battery that dies by noon; avoid it.",
        "A laptop review: the keyboard is great, the trackpad is small, the fan is loud under load.",
        "日本語のレビュー：画面は明るく、電池は二日もちます。",
        "日本語のレビュー：画面は暗く、電池は半日しかもちません。",
    ]
    out = make(near + distinct).clean(near_dedupe=0.7)
    assert out.df["text"].tolist() == [REVIEW, *map(normalize_text, distinct)]
    ev = steps(out)["near_dedupe"]
    assert ev.detail["removed"] == {"near_duplicate": 3} and ev.detail["examples"][0] == [1, 0]


def test_near_dedupe_is_deterministic_and_scales():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.choice(vocab) for _ in range(30)) for _ in range(3000)]
    planted = []
    for k in range(0, 3000, 100):
        words = texts[k].split()
        words[5] = "changed"
        planted.append(" ".join(words))
    texts += planted
    first = near_duplicates(texts, 0.8)
    assert (first[3000:] >= 0).all() and (first[:3000] < 0).all()
    assert (near_duplicates(texts, 0.8) == first).all()


def test_augment_is_reproducible_and_marked():
    ds = make(["Summarize: the meeting moved to Tuesday at noon in room four",
               "Q: what is the capital of France and why is it famous",
               "a plain sentence with several words in it for swapping"])
    a1 = ds.augment(word_dropout=0.2, word_swap=0.2, paraphrase=True, copies=2, seed=1)
    a2 = ds.augment(word_dropout=0.2, word_swap=0.2, paraphrase=True, copies=2, seed=1)
    a3 = ds.augment(word_dropout=0.2, word_swap=0.2, paraphrase=True, copies=2, seed=2)
    assert a1.df.equals(a2.df)
    assert a1.df["text"].tolist() != a3.df["text"].tolist()
    aug = a1.df[a1.df["augmented"]]
    assert len(aug) >= 4 and not a1.df["augmented"][:3].any()
    assert set(aug["source_row"]) <= {0, 1, 2}
    assert len(a1.originals()) == 3
    ev = steps(a1)["augment"]
    assert ev.rows_in == 3 and ev.rows_out == len(a1) and ev.detail["added"] == len(aug)


def test_paraphrase_templates():
    ds = make(["Summarize: the meeting moved to Tuesday.", "Q: why is the sky blue?", "Translate to French: hello"])
    out = ds.augment(paraphrase=True, copies=3, seed=0)
    new = out.df[out.df["augmented"]]["text"].tolist()
    assert any(t.endswith(": the meeting moved to Tuesday.") and not t.startswith("Summarize:") for t in new)
    assert any(t in ("Question: why is the sky blue?", "Please answer the following question: why is the sky blue?",
                     "Answer this question: why is the sky blue?") for t in new)
    assert any("French" in t and t.endswith("hello") and not t.startswith("Translate to") for t in new)
    custom = ds.augment(paraphrase=[["Q: {x}", "Query -> {x}"]], seed=0)
    assert custom.df["text"].tolist()[-1] == "Query -> why is the sky blue?"
    assert steps(custom)["augment"].detail["skipped_identical"] == 2


def test_augment_changes_only_the_prompt_of_pairs():
    df = al.data.samples.dates(30, seed=3)
    ds = al.data.load(df, event_bus=EventBus()).augment(word_swap=0.5, seed=0)
    aug = ds.df[ds.df["augmented"]]
    assert len(aug) > 0
    original = dict(zip(df.index, df["target"], strict=True))
    assert all(original[s] == t for s, t in zip(aug["source_row"], aug["target"], strict=True))
