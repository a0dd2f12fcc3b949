"""Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling with a penalty."""

from __future__ import annotations

from typing import Any

from ..events import TopToken
from .params import GenerationParams


def shaped(logits: Any, history: list[int], p: GenerationParams) -> Any:
    """One row of last-position logits ([1, vocab]) as the sampler sees them: the repetition penalty, then (when
    sampling) temperature, top-k and top-p applied; fp32, never written in place."""
    import torch

    logits = logits[0].float()
    if p.repetition_penalty != 1.0 and history:
        logits = logits.clone()  # the model's output may be an inference tensor: never write into it
        idx = torch.tensor(sorted(set(history)), device=logits.device)
        vals = logits[idx]
        logits[idx] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if p.temperature == 0:
        return logits
    logits = logits / p.temperature
    if p.top_k:
        kth = torch.topk(logits, min(p.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > p.top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


def probabilities(logits: Any, history: list[int], p: GenerationParams) -> Any:
    """The distribution ``pick`` samples from (``temperature > 0``), on the CPU."""
    import torch

    return torch.softmax(shaped(logits, history, p), dim=-1).cpu()


def pick(logits: Any, history: list[int], p: GenerationParams, gen: Any) -> int:
    """The next token id from one row of last-position logits (shape [1, vocab])."""
    import torch

    if p.temperature == 0:
        return int(torch.argmax(shaped(logits, history, p)))
    return int(torch.multinomial(probabilities(logits, history, p), 1, generator=gen))


def logprobs_of(logits: Any, chosen: int, k: int, piece: Any) -> tuple[float, tuple[TopToken, ...]]:
    """The chosen token's log-probability and the ``k`` most likely tokens, under the model's own distribution
    (the raw logits, before penalty, temperature and top-k/p: what the model believes, as vLLM's default
    ``raw_logprobs``). ``piece(id)`` decodes one id. Finite always (JSON has no -inf)."""
    import torch

    lp = torch.log_softmax(logits[0].float(), dim=-1).clamp_min(-1e30)
    top: tuple[TopToken, ...] = ()
    if k:
        values, ids = torch.topk(lp, min(k, lp.numel()))
        pairs = zip(values.tolist(), ids.tolist(), strict=True)
        top = tuple(TopToken(id=i, text=piece(i), logprob=v) for v, i in pairs)
    return float(lp[chosen]), top
