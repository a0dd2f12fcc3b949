"""Turn a dataset into micro-batches: tokenize, pack causal texts into blocks, pad pairs, mask labels.

Order is a pure function of ``(seed, epoch)``: micro-batch ``m`` of the whole run is batch
``m % n`` of epoch ``m // n`` under that epoch's seeded permutation, so a resumed run (or another
process) finds its place from the step count alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import AigcLabError
from .config import TrainConfigError

IGNORE = -100


def as_examples(data: Any) -> tuple[list[str] | list[tuple[str, str]], Any]:
    """Normalise ``data`` to ``(train examples, validation examples or None)``.

    Accepts a ``Splits`` (train/val), a ``Dataset`` (text -> strings, pairs -> (input, target), chat ->
    conversations), a list of strings, a list of (input, target) pairs, or a list of conversations (lists of
    ``{"role", "content"}`` turns).
    """
    from ..data import Dataset, Splits
    from .chat_data import is_conversations

    if isinstance(data, Splits):
        val = as_examples(data.val)[0] if len(data.val) else None
        return as_examples(data.train)[0], val
    if isinstance(data, Dataset):
        if data.kind == "chat":
            return data.conversations(), None
        kind = "plain" if data.kind == "text" else "seq2seq"
        return list(data.template(kind)), None
    if isinstance(data, (list, tuple)) and data:
        if all(isinstance(x, str) for x in data):
            return list(data), None
        if is_conversations(data):
            from ..data.conversations import normalize_turns

            try:
                return [normalize_turns(c) for c in data], None
            except AigcLabError as exc:
                raise TrainConfigError(f"a conversation in the list is malformed: {exc}") from None
        if all(isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(s, str) for s in x) for x in data):
            return [(a, b) for a, b in data], None
    raise TrainConfigError("dataset must be a Dataset, Splits, a non-empty list of strings, a list of "
                           "(input, target) string pairs, or a list of conversations")


def is_pairs(examples: Sequence[Any]) -> bool:
    return bool(examples) and isinstance(examples[0], tuple)


@dataclass
class Encoded:
    """Tokenized rows (lists of ids) ready to batch; ``labels`` rows align with ``input_ids`` rows."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    seq2seq: bool
    pad_id: int
    packed: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def _eos(tok: Any) -> int:
    eos = tok.eos_token_id
    return int(eos if eos is not None else tok.pad_token_id or 0)


def pad_id(tok: Any) -> int:
    """The id rows are padded with: the pad token, else the end token."""
    return int(tok.pad_token_id if tok.pad_token_id is not None else _eos(tok))


def encode(examples: Sequence[Any], tokenizer: Any, kind: str, *, max_length: int, max_target_length: int,
           packing: bool, chat_template: str | None = None, train_on: str = "assistant") -> Encoded:
    """Tokenize ``examples`` for a ``causal`` or ``seq2seq`` model.

    Causal texts are joined with the end token and cut into ``max_length`` blocks when ``packing``;
    causal pairs become ``input + "\\n" + target + eos`` with the prompt masked out of the loss.
    Seq2seq pairs keep input and target apart (texts train as a target with an empty input).
    Conversations go through ``chat_template`` (``train/chat_data.py``), labelled per ``train_on``.
    """
    from .chat_data import encode_conversations, is_conversations

    if is_conversations(examples):
        if kind == "seq2seq":
            raise TrainConfigError("conversations train a causal (decoder-only) model; this one is seq2seq")
        if chat_template is None:
            raise TrainConfigError("conversations need a chat template (the Jinja source from "
                                   "al.data.chat_templates.resolve)")
        return encode_conversations(examples, tokenizer, chat_template=chat_template, train_on=train_on,
                                    max_length=max_length, packing=packing)
    pad = pad_id(tokenizer)
    if kind == "seq2seq":
        pairs = list(examples) if is_pairs(examples) else [("", t) for t in examples]
        src = tokenizer([a for a, _ in pairs], truncation=True, max_length=max_length)["input_ids"]
        tgt = tokenizer(text_target=[b for _, b in pairs], truncation=True, max_length=max_target_length)["input_ids"]
        return Encoded([list(x) for x in src], [list(y) for y in tgt], seq2seq=True, pad_id=int(pad))
    eos = _eos(tokenizer)
    if is_pairs(examples):
        ids, labels = [], []
        prompts = tokenizer([a + "\n" for a, _ in examples], add_special_tokens=False)["input_ids"]
        targets = tokenizer([b for _, b in examples], add_special_tokens=False)["input_ids"]
        for p, t in zip(prompts, targets, strict=True):
            row = (list(p) + list(t) + [eos])[:max_length]
            ids.append(row)
            labels.append(([IGNORE] * len(p) + list(t) + [eos])[:max_length])
        return Encoded(ids, labels, seq2seq=False, pad_id=int(pad))
    rows = [list(x) for x in tokenizer(list(examples), add_special_tokens=False, verbose=False)["input_ids"]]
    if not packing:
        rows = [(r + [eos])[:max_length] for r in rows]
        return Encoded(rows, [list(r) for r in rows], seq2seq=False, pad_id=int(pad))
    stream: list[int] = []
    for r in rows:
        stream.extend(r)
        stream.append(eos)
    n = len(stream) // max_length
    if n == 0:  # less than one block: one short block
        blocks = [stream]
    else:
        blocks = [stream[i * max_length:(i + 1) * max_length] for i in range(n)]
    return Encoded(blocks, [list(b) for b in blocks], seq2seq=False, pad_id=int(pad), packed=True)


def _pad(rows: Sequence[list[int]], value: int) -> Any:
    import torch

    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def collate(enc: Encoded, idx: Sequence[int]) -> dict[str, Any]:
    """The tensors of rows ``idx``: right-padded, ``attention_mask``, ``labels`` with padding ignored."""
    ids = [enc.input_ids[i] for i in idx]
    labels = [enc.labels[i] for i in idx]
    input_ids = _pad(ids, enc.pad_id)
    mask = _pad([[1] * len(r) for r in ids], 0)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": _pad(labels, IGNORE)}


class Batches:
    """Deterministic micro-batch order over ``enc``: ``batch(m)`` gives micro-batch ``m`` of the run.

    With ``world > 1`` each process takes its ``rank``-th slice of every global micro-batch of
    ``batch_size * world`` rows, so the global batch equals a single process's ``batch_size * world``.
    """

    def __init__(self, enc: Encoded, batch_size: int, seed: int, *, shuffle: bool = True, rank: int = 0,
                 world: int = 1) -> None:
        self.enc, self.batch_size, self.seed, self.shuffle = enc, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.global_size = batch_size * world
        self.per_epoch = max(1, -(-len(enc) // self.global_size))
        self._order: tuple[int, np.ndarray] | None = None

    def _perm(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            n = len(self.enc)
            perm = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._order = (epoch, perm)
        return self._order[1]

    def indices(self, m: int) -> list[int]:
        epoch, b = divmod(m, self.per_epoch)
        rows = self._perm(epoch)[b * self.global_size:(b + 1) * self.global_size]
        if len(rows) < self.global_size and len(rows):  # the last, short batch is evenly shared
            per = -(-len(rows) // self.world)
            return rows[self.rank * per:(self.rank + 1) * per].tolist() or rows[-1:].tolist()
        return rows[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()

    def batch(self, m: int) -> dict[str, Any]:
        return collate(self.enc, self.indices(m))

    def epoch_of(self, m: int) -> float:
        return m / self.per_epoch
