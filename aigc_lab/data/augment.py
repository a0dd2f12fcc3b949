"""Data expansion: random word dropout, random word swap and template-based paraphrase of prompts.

Every copy gets its own ``random.Random`` seeded from (seed, source row, copy number), so a row's
augmentations do not depend on which other rows are present, and the same seed gives the same rows.
Augmented rows are marked in the ``augmented`` column and keep their source's ``source_row``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import DataError
from .dataset import AUGMENTED, SOURCE

if TYPE_CHECKING:
    from .dataset import Dataset

PARAPHRASES: tuple[tuple[str, ...], ...] = (
    ("Summarize: {x}", "Summarize the following text: {x}", "Please summarize the following: {x}",
     "Give a short summary of this text: {x}", "Write a brief summary of: {x}"),
    ("Q: {x}", "Question: {x}", "Please answer the following question: {x}", "Answer this question: {x}"),
    ("Translate to {lang}: {x}", "Translate the following into {lang}: {x}", "Please translate this into {lang}: {x}",
     "Give the {lang} translation of: {x}"),
    ("Explain: {x}", "Explain the following: {x}", "Please explain: {x}", "Can you explain this? {x}"),
    ("Sentiment: {x}", "What is the sentiment of this text? {x}", "Classify the sentiment: {x}",
     "Is this positive or negative? {x}"),
    ("Normalize the date: {x}", "Convert this date to YYYY-MM-DD: {x}", "Write this date in ISO format: {x}",
     "Date: {x}"),
    ("Continue the story: {x}", "Continue this text: {x}", "Write what happens next: {x}"),
    ("Fix the grammar: {x}", "Correct the grammar of this sentence: {x}", "Please fix any grammar mistakes: {x}"),
)
"""Families of prompt templates that mean the same; a prompt matching one is rewritten as another."""

_SLOT = re.compile(r"\{(\w+)\}")


def _compile(template: str) -> re.Pattern[str]:
    parts, last, slots = [], 0, _SLOT.findall(template)
    for k, m in enumerate(_SLOT.finditer(template)):
        parts.append(re.escape(template[last:m.start()]))
        final = k == len(slots) - 1 and m.end() == len(template)
        parts.append(f"(?P<{m.group(1)}>.+)" if final else f"(?P<{m.group(1)}>[^:\n]+?)")
        last = m.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts).replace(r"\ ", r"\s+"), re.IGNORECASE | re.DOTALL)


class Paraphraser:
    """Rewrite a prompt with another template of the family its template belongs to."""

    def __init__(self, families: Sequence[Sequence[str]] = PARAPHRASES) -> None:
        self.families = [list(f) for f in families]
        for fam in self.families:
            if len(fam) < 2:
                raise DataError(f"a paraphrase family needs at least two templates, got {fam!r}")
            slots = {frozenset(_SLOT.findall(t)) for t in fam}
            if len(slots) != 1:
                raise DataError(f"the templates of a paraphrase family must use the same slots: {fam!r}")
        # longest literal text first, so "Summarize the following text: {x}" wins over "Summarize: {x}"
        self._patterns = sorted(((len(_SLOT.sub("", t)), _compile(t), f, i) for f, fam in enumerate(self.families)
                                 for i, t in enumerate(fam)), key=lambda p: -p[0])

    def __call__(self, text: str, rng: random.Random) -> str:
        stripped = text.strip()
        for _, pattern, fam, i in self._patterns:
            m = pattern.fullmatch(stripped)
            if m:
                others = [t for k, t in enumerate(self.families[fam]) if k != i]
                return rng.choice(others).format(**m.groupdict())
        return text


def word_dropout(text: str, p: float, rng: random.Random) -> str:
    """Drop each word with probability ``p`` (line breaks kept; at least one word survives)."""
    lines = [line.split() for line in text.split("\n")]
    total = sum(map(len, lines))
    if total < 2 or p <= 0:
        return text
    kept = [[w for w in words if rng.random() >= p] for words in lines]
    if not any(kept):
        flat = [w for words in lines for w in words]
        kept = [[rng.choice(flat)]]
    return "\n".join(" ".join(words) for words in kept)


def word_swap(text: str, p: float, rng: random.Random) -> str:
    """Swap ``round(p * words)`` random pairs of words (at least one pair when ``p > 0``) within a line."""
    lines = [line.split() for line in text.split("\n")]
    total = sum(map(len, lines))
    if total < 2 or p <= 0:
        return text
    swappable = [k for k, words in enumerate(lines) if len(words) >= 2]
    for _ in range(max(1, round(p * total))):
        words = lines[rng.choice(swappable)]
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return "\n".join(" ".join(words) for words in lines)


_dropout, _swap = word_dropout, word_swap  # ``augment``'s parameters shadow these names


def augment(ds: Dataset, *, word_dropout: float = 0.0, word_swap: float = 0.0,
            paraphrase: bool | Sequence[Sequence[str]] = False, copies: int = 1, seed: int = 0,
            column: str | None = None) -> Dataset:
    """Add ``copies`` augmented copies of each original row; a copy identical to its source or to an earlier
    copy is not added (counted as ``skipped_identical``)."""
    for name, p in (("word_dropout", word_dropout), ("word_swap", word_swap)):
        if not 0 <= p < 1:
            raise DataError(f"{name} is a probability in [0, 1), not {p!r}")
    if copies < 1:
        raise DataError(f"copies must be at least 1, not {copies!r}")
    if not (word_dropout or word_swap or paraphrase):
        raise DataError("augment needs at least one of word_dropout=, word_swap=, paraphrase=")
    col = column or ds.prompt_column()
    if col not in ds._df.columns:
        raise DataError(f"no column {col!r} to augment; columns: {', '.join(map(str, ds._df.columns))}")
    para = None
    if paraphrase:
        para = Paraphraser(PARAPHRASES if paraphrase is True else paraphrase)

    df = ds._df
    originals = df[~df[AUGMENTED]]
    new_rows, paraphrased, identical = [], 0, 0
    for row in originals.to_dict("records"):
        source = row[SOURCE]
        seen = {row[col]}
        for c in range(copies):
            rng = random.Random(f"{seed}/{source}/{c}")
            text = original = row[col]
            if para is not None:
                text = para(text, rng)
                paraphrased += text != original
            if word_dropout:
                text = _dropout(text, word_dropout, rng)
            if word_swap:
                text = _swap(text, word_swap, rng)
            if text in seen:  # same as the source or as an earlier copy: adds nothing
                identical += 1
                continue
            seen.add(text)
            new = dict(row)
            new[col] = text
            new[AUGMENTED] = True
            new_rows.append(new)
    out_df = pd.concat([df, pd.DataFrame(new_rows, columns=df.columns)], ignore_index=True) if new_rows else df
    out_df[AUGMENTED] = out_df[AUGMENTED].astype(bool)
    out = ds._derive(out_df)
    out._emit("augment", len(ds), len(out), 0, added=len(new_rows), copies=copies, column=col, seed=seed,
              ops={"word_dropout": word_dropout, "word_swap": word_swap, "paraphrase": bool(paraphrase)},
              paraphrased=int(paraphrased), skipped_identical=identical)
    return out
