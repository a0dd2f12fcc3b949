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


def decode(streams: Sequence[TokenStream], handle: Any, plan: Plan) -> Iterator[None]:
    """Generate for every stream (same model, same parameters) in one batched loop, on ``plan``'s stepper."""
    import torch

    p = streams[0].params
    model, tok = plan.layers.model, handle.tokenizer
    n = len(streams)
    t0 = time.perf_counter()
    for s in streams:
        s._start(t0)
    active = [True] * n
    try:
        device = next(model.parameters()).device
        seq2seq = handle.kind == "seq2seq"
        enc = _encode(tok, [s.prompt for s in streams], left_pad=not seq2seq)
        ids = enc["input_ids"].to(device)
        mask = enc["attention_mask"].to(device) if n > 1 or seq2seq else None
        budget = token_budget(model, ids.shape[1], p.max_new_tokens, seq2seq)
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else (eos or 0)
        stops = stop_ids(handle, p)  # every end id (generation_config's list too) and the chat end-of-turn
        gens = [torch.Generator(device="cpu").manual_seed(p.seed) if p.seed is not None else None for _ in streams]

        def one_piece(token_id: int) -> str:  # an alternative's text, for logprobs
            return tok.decode([token_id], skip_special_tokens=False)

        if seq2seq:
            history: list[list[int]] = [[] for _ in streams]
            detoks = [IncrementalDetokenizer(tok) for _ in streams]
        else:
            rows = ids.tolist() if mask is None else [
                [t for t, m in zip(row, mrow, strict=True) if m] for row, mrow in zip(ids.tolist(), mask.tolist(),
                                                                                       strict=True)]
            history = [list(r) for r in rows]
            detoks = [IncrementalDetokenizer(tok, r) for r in rows]
        # stop strings are matched in a sliding window (the longest stop string plus the new piece), not in
        # the whole generated text: the per-token check stays O(1) however long the generation runs
        keep = max((len(x) for x in p.stop), default=1) - 1
        tails = [""] * n

        # room for the whole run, up to RESERVE_MAX new positions (beyond, the stepper's cache grows)
        stepper = plan.stepper.build(model, ids.shape[1] + min(budget, RESERVE_MAX))
        logits = stepper.prefill(ids, mask)
        for i in range(budget):
            for b, s in enumerate(streams):
                if active[b] and s._cancel_flag.is_set():
                    active[b] = False
                    s._finish("cancelled", detoks[b].flush(), t0)
            if not any(active):
                break
            next_ids = []
            for b, s in enumerate(streams):
                if not active[b]:
                    next_ids.append(pad)
                    continue
                nid = pick(logits[b:b + 1], history[b], p, gens[b])
                piece = detoks[b].push(nid)
                if p.logprobs is None:
                    s._emit(Token(run=s.run, i=len(s.tokens), id=nid, text=piece,
                                  ms=(time.perf_counter() - t0) * 1000.0))
                else:
                    lp, top = logprobs_of(logits[b:b + 1], nid, p.logprobs, one_piece)
                    s._emit(Token(run=s.run, i=len(s.tokens), id=nid, text=piece,
                                  ms=(time.perf_counter() - t0) * 1000.0, logprob=lp, top=top))
                history[b].append(nid)
                next_ids.append(nid)
                hit = False
                if p.stop:
                    window = tails[b] + piece
                    hit = any(x in window for x in p.stop)
                    tails[b] = window[-keep:] if keep else ""
                if nid in stops or hit:
                    active[b] = False
                    s._finish("ok", detoks[b].flush(), t0)
            yield None
            if not any(active) or i + 1 == budget:
                break
            logits = stepper.step(next_ids)
        for b, s in enumerate(streams):
            if active[b]:
                active[b] = False
                s._finish("ok", detoks[b].flush(), t0)
    except (KeyboardInterrupt, GeneratorExit) as exc:
        for b, s in enumerate(streams):
            if active[b]:
                s._finish("cancelled", "", t0, exc if isinstance(exc, KeyboardInterrupt) else None)
        raise
    except Exception as exc:
        for b, s in enumerate(streams):
            if active[b]:
                s._finish("error", "", t0, exc)
        raise
