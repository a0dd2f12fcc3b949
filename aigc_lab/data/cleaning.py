"""Cleaning steps: normalisation, HTML stripping, lower-casing, symbol, length and duplicate filters.

Each step is a pure text function or row filter; ``clean`` runs the enabled ones in a fixed order and
reports, per step, how many rows it changed and how many it removed and why.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .conversations import key, map_contents
from .dataset import SOURCE, empty_rows

if TYPE_CHECKING:
    from .dataset import Dataset

# zero-width space, word joiner, BOM, soft hyphen (not ZWJ/ZWNJ: some scripts and emoji need them)
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad"), None)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HSPACE = re.compile(r"[^\S\n]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_SPACE_AROUND_NL = re.compile(r" ?\n ?")


def normalize_text(text: str) -> str:
    """NFKC, no control or invisible characters, single spaces, at most one blank line, no outer space.

    NFKC folds compatibility forms (full-width letters, ligatures, non-breaking spaces) into their
    plain equivalents, so the same word is the same string (and the same tokens) everywhere.
    """
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    text = _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _SPACE_AROUND_NL.sub("\n", _HSPACE.sub(" ", text))
    return _MANY_NEWLINES.sub("\n\n", text).strip()


class _TextOnly(HTMLParser):
    _SKIP = {"script", "style", "head", "template", "noscript"}
    _BLOCK = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table",
              "blockquote", "pre", "hr", "section", "article", "header", "footer"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BLOCK:
            self._newline()

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCK:
            self._newline()

    def _newline(self) -> None:
        if self.parts and not self.parts[-1].endswith("\n"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


_LOOKS_HTML = re.compile(r"<[a-zA-Z/!]|&(#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);")


def strip_html(text: str) -> str:
    """Text content of an HTML fragment: tags removed, entities decoded, script/style contents dropped."""
    if not _LOOKS_HTML.search(text):
        return text
    parser = _TextOnly()
    parser.feed(text)
    parser.close()
    out = "".join(parser.parts)
    return _MANY_NEWLINES.sub("\n\n", _SPACE_AROUND_NL.sub("\n", _HSPACE.sub(" ", out))).strip()


_strip_html = strip_html  # ``clean``'s parameter of the same name shadows it


@lru_cache(maxsize=65536)
def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LMN"  # letters, combining marks (Devanagari, Thai...), digits


def symbol_ratio(text: str) -> float:
    """Share of non-space characters that are not letters, marks or digits, in any script (1.0 if empty)."""
    counts = Counter(text)
    total = word = 0
    for ch, n in counts.items():
        if ch.isspace():
            continue
        total += n
        if _is_word_char(ch):
            word += n
    return 1.0 if total == 0 else 1.0 - word / total


# ---------------------------------------------------------------------------------------------


def _map_step(ds: Dataset, step: str, fn: Callable[[str], str], **detail: Any) -> Dataset:
    """Apply ``fn`` to every role column; count changed rows; drop rows left empty."""
    df = ds._df.copy()
    changed = np.zeros(len(df), dtype=bool)
    chat = ds.kind == "chat"
    for col in dict.fromkeys(ds.roles.values()):
        before = df[col].tolist()
        after = [map_contents(t, fn) for t in before] if chat else [fn(t) for t in before]
        changed |= np.fromiter((a != b for a, b in zip(after, before, strict=True)), bool, len(before))
        df[col] = pd.Series(after, index=df.index, dtype=object)
    empty = empty_rows(df, ds.roles).to_numpy()
    out = ds._derive(df[~empty])
    out._emit(step, len(df), len(out), int((changed & ~empty).sum()), removed={"empty": int(empty.sum())}, **detail)
    return out


def _filter_step(ds: Dataset, step: str, remove: np.ndarray, reason: str, **detail: Any) -> Dataset:
    out = ds._derive(ds._df[~remove])
    out._emit(step, len(ds), len(out), 0, removed={reason: int(remove.sum())}, **detail)
    return out


def clean(ds: Dataset, *, normalize: bool = True, strip_html: bool = False, lower: bool = False,
          dedupe: bool = True, near_dedupe: float | bool | None = None, min_chars: int | None = None,
          max_chars: int | None = None, min_tokens: int | None = None, max_tokens: int | None = None,
          tokenizer: Any = None, max_symbol_ratio: float | None = None, seed: int = 0) -> Dataset:
    """Run the enabled cleaning steps in order (see ``Dataset.clean``); one ``DataStep`` per step."""
    if (min_tokens is not None or max_tokens is not None) and tokenizer is None:
        raise DataError("min_tokens/max_tokens need tokenizer= (a Hugging Face tokenizer, a tokenizers.Tokenizer "
                        "or a model handle) to count tokens")
    if near_dedupe is True:
        near_dedupe = 0.85
    if near_dedupe is not None and near_dedupe is not False and not 0 < float(near_dedupe) <= 1:
        raise DataError(f"near_dedupe is a Jaccard similarity threshold in (0, 1], not {near_dedupe!r}")
    if max_symbol_ratio is not None and not 0 <= max_symbol_ratio <= 1:
        raise DataError(f"max_symbol_ratio is a share in [0, 1], not {max_symbol_ratio!r}")

    if strip_html:
        ds = _map_step(ds, "strip_html", _strip_html)
    if normalize:
        ds = _map_step(ds, "normalize", normalize_text, unicode="NFKC")
    if lower:
        ds = _map_step(ds, "lower", str.lower)
    if max_symbol_ratio is not None:
        ratios = np.fromiter((symbol_ratio(t) for t in ds.combined_text()), float, len(ds))
        ds = _filter_step(ds, "symbols", ratios > max_symbol_ratio, "mostly_symbols", max_symbol_ratio=max_symbol_ratio)
    if min_chars is not None or max_chars is not None:
        n = ds.combined_text().str.len().to_numpy()
        short = n < min_chars if min_chars is not None else np.zeros(len(n), bool)
        long = n > max_chars if max_chars is not None else np.zeros(len(n), bool)
        out = ds._derive(ds._df[~(short | long)])
        out._emit("length_chars", len(ds), len(out), 0, min_chars=min_chars, max_chars=max_chars,
                  removed={"too_short": int(short.sum()), "too_long": int((long & ~short).sum())})
        ds = out
    if min_tokens is not None or max_tokens is not None:
        from .stats import count_tokens

        n = np.asarray(count_tokens(tokenizer, ds.combined_text().tolist()))
        short = n < min_tokens if min_tokens is not None else np.zeros(len(n), bool)
        long = n > max_tokens if max_tokens is not None else np.zeros(len(n), bool)
        out = ds._derive(ds._df[~(short | long)])
        out._emit("length_tokens", len(ds), len(out), 0, min_tokens=min_tokens, max_tokens=max_tokens,
                  removed={"too_few_tokens": int(short.sum()), "too_many_tokens": int((long & ~short).sum())})
        ds = out
    if dedupe:
        cols = list(dict.fromkeys(ds.roles.values()))
        table = ds._df[cols].map(key) if ds.kind == "chat" else ds._df  # turn lists are not hashable
        dup = table.duplicated(subset=cols, keep="first").to_numpy()
        ds = _filter_step(ds, "dedupe", dup, "duplicate")
    if near_dedupe:
        from .near_dup import near_duplicates

        dup_of = near_duplicates(ds.combined_text().tolist(), threshold=float(near_dedupe), seed=seed)
        src = ds._df[SOURCE].to_numpy()
        pairs = [[int(src[j]), int(src[i])] for j, i in enumerate(dup_of) if i >= 0][:5]  # [removed, kept]
        ds = _filter_step(ds, "near_dedupe", dup_of >= 0, "near_duplicate", threshold=float(near_dedupe),
                          examples=pairs)
    return ds
