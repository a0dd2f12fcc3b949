"""Incremental detokenization: text pieces whose concatenation equals the full decode.

A byte-level BPE token may hold half of a multi-byte character; decoding it alone gives U+FFFD. We
decode a short window of recent ids and emit only the stable new suffix, holding back a piece that
ends in an incomplete character until the next token completes it.
"""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    """Turn a growing list of token ids into text pieces, one ``push`` per token."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int] | None = None) -> None:
        self._tok = tokenizer
        self._ids: list[int] = list(prompt_ids or [])
        # window start and the end of the ids already emitted as text
        self._prefix = max(0, len(self._ids) - 5)
        self._read = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add one id; return the text it completes (possibly empty while a character is incomplete)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """Text still held back at the end of generation (an incomplete character, decoded as is)."""
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        self._prefix = self._read = len(self._ids)
        return after[len(before):]
