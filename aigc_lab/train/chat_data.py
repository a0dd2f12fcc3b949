"""Conversations as training rows: the chat template applied, labels on the assistant's tokens only.

``train_on="assistant"`` (the default for conversations) gives every token of an assistant reply and the
end-of-turn token that closes it a label, and nothing else (system, user and tool turns, template markers,
the generation prompt). ``train_on="all"`` trains on every token. Packing puts whole conversations
side by side in rows of at most ``max_length`` tokens and never cuts one across two rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..data.chat_templates import assistant_spans, render
from .collate import IGNORE, Encoded, pad_id
from .config import TRAIN_ON, TrainConfigError

Conversation = Sequence[Mapping[str, str]]


def is_conversations(examples: Sequence[Any]) -> bool:
    """Whether ``examples`` are conversations (lists of ``{"role", "content"}`` turns)."""
    return bool(examples) and isinstance(examples[0], (list, tuple)) and bool(examples[0]) \
        and isinstance(examples[0][0], Mapping)


def labelled(tokenizer: Any, conv: Conversation, jinja: str, train_on: str) -> tuple[list[int], list[int]]:
    """Token ids of one rendered conversation and their labels (``IGNORE`` outside assistant replies)."""
    if train_on == "all":
        text, spans = render(tokenizer, conv, chat_template=jinja), []
    else:
        text, spans = assistant_spans(tokenizer, conv, jinja)
    if not getattr(tokenizer, "is_fast", False):
        raise TrainConfigError("training on conversations needs a fast (Rust) tokenizer, which reports where each "
                               "token lies in the text; load the model's tokenizer with use_fast=True")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    if train_on == "all":
        return ids, list(ids)
    labels = [t if any(s < b and e > a for a, b in spans) else IGNORE
              for t, (s, e) in zip(ids, enc["offset_mapping"], strict=True)]
    return ids, labels


def encode_conversations(convs: Sequence[Conversation], tokenizer: Any, *, chat_template: str, train_on: str,
                         max_length: int, packing: bool) -> Encoded:
    """Tokenize and label ``convs``; with ``packing``, each conversation joins the current row while it fits."""
    if train_on not in TRAIN_ON:
        raise TrainConfigError(f"train_on must be one of {', '.join(TRAIN_ON)}, not {train_on!r}")
    rows = [labelled(tokenizer, c, chat_template, train_on) for c in convs]
    rows = [(ids[:max_length], labels[:max_length]) for ids, labels in rows]  # a long one is cut, alone
    if not packing:
        return Encoded([r[0] for r in rows], [r[1] for r in rows], seq2seq=False, pad_id=pad_id(tokenizer))
    ids_out: list[list[int]] = []
    labels_out: list[list[int]] = []
    for ids, labels in rows:
        if ids_out and len(ids_out[-1]) + len(ids) <= max_length:
            ids_out[-1].extend(ids)
            labels_out[-1].extend(labels)
        else:
            ids_out.append(list(ids))
            labels_out.append(list(labels))
    return Encoded(ids_out, labels_out, seq2seq=False, pad_id=pad_id(tokenizer), packed=True)


def loss_share(enc: Encoded) -> float:
    """Share of the tokens that carry a label (0 when a template marker was never found)."""
    total = sum(len(r) for r in enc.input_ids)
    return sum(sum(1 for t in r if t != IGNORE) for r in enc.labels) / max(total, 1)
