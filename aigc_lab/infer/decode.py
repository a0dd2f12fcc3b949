"""The KV-cached decode loop for one prompt or a batch: a generator that yields once per decode step.

It does no I/O and no JSON: each token becomes a ``Token`` handed to its stream (which publishes it on
the bus). Every stream it serves gets exactly one ``run.end``: when its sequence ends (end-of-text,
a stop string, ``max_new_tokens``, the end of GPT-2's position table), when it is cancelled, or when the loop raises.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import GenerationConfigError
from ..events import Token
from .detok import IncrementalDetokenizer
from .params import stop_ids
from .sampling import logprobs_of, pick

if TYPE_CHECKING:
    from .backends import Plan
    from .engine import TokenStream


RESERVE_MAX = 4096


def token_budget(model: Any, prompt_tokens: int, max_new_tokens: int, seq2seq: bool) -> int:
    """How many tokens the run may generate: ``max_new_tokens``, but never past a decoder's table of absolute
    positions (GPT-2's ``n_positions``), where the model would fail with an index error mid-run. Raises
    ``GenerationConfigError`` when the prompt alone fills it."""
    limit = getattr(getattr(model, "config", None), "n_positions", None)
    if seq2seq or not isinstance(limit, int):
        return max_new_tokens
    room = limit - prompt_tokens
    if room < 1:
        raise GenerationConfigError(f"the prompt has {prompt_tokens} tokens and this model reads at most {limit} "
                                    f"(its n_positions): shorten the prompt")
    return min(max_new_tokens, room)


def _encode(tok: Any, prompts: Sequence[str], *, left_pad: bool) -> dict[str, Any]:
    if len(prompts) == 1:
        return tok(prompts[0], return_tensors="pt")
    side = tok.padding_side
    tok.padding_side = "left" if left_pad else "right"
    try:
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok(list(prompts), return_tensors="pt", padding=True)
    finally:
        tok.padding_side = side


class Output:
    """One stream's side of a decode loop: its token history, detokenizer and stop-string window. ``push`` emits a
    token and says whether it ended the sequence (an end id or a stop string); ``end`` finishes the stream."""

    def __init__(self, stream: TokenStream, detok: IncrementalDetokenizer, history: list[int], stops: frozenset[int],
                 t0: float, piece: Any) -> None:
        self.stream, self.detok, self.history, self.stops = stream, detok, history, stops
        self.t0, self.piece = t0, piece
        self.p = stream.params
        # stop strings are matched in a sliding window (the longest stop string plus the new piece), not in
        # the whole generated text: the per-token check stays O(1) however long the generation runs
        self.keep = max((len(x) for x in self.p.stop), default=1) - 1
        self.tail = ""
        self.active = True

    def push(self, nid: int, logits: Any, *, draft: bool = False) -> bool:
        """Emit ``nid`` (chosen from ``logits`` [1, vocab]); True when it ends the sequence (then finished)."""
        s, p = self.stream, self.p
        text = self.detok.push(nid)
        ms = (time.perf_counter() - self.t0) * 1000.0
        if p.logprobs is None:
            s._emit(Token(run=s.run, i=len(s.tokens), id=nid, text=text, ms=ms, draft=draft))
        else:
            lp, top = logprobs_of(logits, nid, p.logprobs, self.piece)
            s._emit(Token(run=s.run, i=len(s.tokens), id=nid, text=text, ms=ms, logprob=lp, top=top, draft=draft))
        self.history.append(nid)
        hit = False
        if p.stop:
            window = self.tail + text
            hit = any(x in window for x in p.stop)
            self.tail = window[-self.keep:] if self.keep else ""
        if nid in self.stops or hit:
            self.end("ok")
            return True
        return False

    def end(self, status: str, exc: BaseException | None = None) -> None:
        if self.active:
            self.active = False
            self.stream._finish(status, self.detok.flush() if exc is None else "", self.t0, exc)


def outputs(streams: Sequence[TokenStream], handle: Any, model: Any) -> tuple[list[Output], Any, Any, int]:
    """Start the streams and tokenize their prompts: (outputs, ids, mask, token budget)."""
    tok = handle.tokenizer
    p = streams[0].params
    t0 = time.perf_counter()
    for s in streams:
        s._start(t0)
    seq2seq = handle.kind == "seq2seq"
    n = len(streams)
    device = next(model.parameters()).device
    enc = _encode(tok, [s.prompt for s in streams], left_pad=not seq2seq)
    ids = enc["input_ids"].to(device)
    mask = enc["attention_mask"].to(device) if n > 1 or seq2seq else None
    budget = token_budget(model, ids.shape[1], p.max_new_tokens, seq2seq)
    stops = stop_ids(handle, p)  # every end id (generation_config's list too) and the chat end-of-turn

    def piece(token_id: int) -> str:  # an alternative's text, for logprobs
        return tok.decode([token_id], skip_special_tokens=False)

    if seq2seq:
        rows: list[list[int]] = [[] for _ in streams]
        detoks = [IncrementalDetokenizer(tok) for _ in streams]
    else:
        rows = ids.tolist() if mask is None else [
            [t for t, m in zip(row, mrow, strict=True) if m] for row, mrow in zip(ids.tolist(), mask.tolist(),
                                                                                   strict=True)]
        detoks = [IncrementalDetokenizer(tok, r) for r in rows]
    outs = [Output(s, d, list(r), stops, t0, piece) for s, d, r in zip(streams, detoks, rows, strict=True)]
    return outs, ids, mask, budget


def guarded(streams: Sequence[TokenStream], loop: Iterator[None]) -> Iterator[None]:
    """Run ``loop`` so that every stream still running gets its ``run.end``: cancelled on an interrupt or a closed
    generator, error when the loop raises."""
    t0 = time.perf_counter()
    try:
        yield from loop
    except (KeyboardInterrupt, GeneratorExit) as exc:
        for s in streams:
            if not s.done:
                s._finish("cancelled", "", t0, exc if isinstance(exc, KeyboardInterrupt) else None)
        raise
    except Exception as exc:
        for s in streams:
            if not s.done:
                s._finish("error", "", t0, exc)
        raise


def decode(streams: Sequence[TokenStream], handle: Any, plan: Plan) -> Iterator[None]:
    """Generate for every stream (same model, same parameters) in one batched loop, on ``plan``'s stepper."""
    return guarded(streams, _decode(streams, handle, plan))


def _decode(streams: Sequence[TokenStream], handle: Any, plan: Plan) -> Iterator[None]:
    import torch

    p = streams[0].params
    model, tok = plan.layers.model, handle.tokenizer
    outs, ids, mask, budget = outputs(streams, handle, model)
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos or 0)
    gens = [torch.Generator(device="cpu").manual_seed(p.seed) if p.seed is not None else None for _ in streams]
    # room for the whole run, up to RESERVE_MAX new positions (beyond, the stepper's cache grows)
    stepper = plan.stepper.build(model, ids.shape[1] + min(budget, RESERVE_MAX))
    logits = stepper.prefill(ids, mask)
    for i in range(budget):
        for o in outs:
            if o.active and o.stream._cancel_flag.is_set():
                o.end("cancelled")
        if not any(o.active for o in outs):
            break
        next_ids = []
        for b, o in enumerate(outs):
            if not o.active:
                next_ids.append(pad)
                continue
            row = logits[b:b + 1]
            nid = pick(row, o.history, p, gens[b])
            next_ids.append(nid)
            o.push(nid, row)
        yield None
        if not any(o.active for o in outs) or i + 1 == budget:
            break
        logits = stepper.step(next_ids)
    for o in outs:
        o.end("ok")
