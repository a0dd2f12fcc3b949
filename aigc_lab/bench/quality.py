"""Quality measures that need no labels beyond held-out text: perplexity on texts and greedy agreement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import BenchmarkError
from ..train.evaluate import perplexity


def mean_token_nll(handle: Any, texts: Sequence[str], *, max_length: int = 256) -> float:
    """Token-weighted mean negative log-likelihood (nats) of a causal model on ``texts`` (each truncated to
    ``max_length`` tokens): the same quantity as a training run's validation loss."""
    import torch
    import torch.nn.functional as F

    if handle.kind == "seq2seq":
        raise BenchmarkError("perplexity on plain text needs a causal model; evaluate seq2seq models on their task")
    total_nll, total_tokens = 0.0, 0
    device = handle.device
    with torch.inference_mode():
        for text in texts:
            ids = handle.tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
            if ids.shape[1] < 2:
                continue
            logits = handle.model(input_ids=ids.to(device)).logits.float()
            nll = F.cross_entropy(logits[0, :-1], ids[0, 1:].to(device), reduction="sum")
            total_nll += float(nll)
            total_tokens += ids.shape[1] - 1
    if total_tokens == 0:
        raise BenchmarkError("no text long enough to measure perplexity (need at least 2 tokens)")
    return total_nll / total_tokens


def text_perplexity(handle: Any, texts: Sequence[str], *, max_length: int = 256) -> float | None:
    """Perplexity of ``handle`` on ``texts``: ``train.evaluate.perplexity`` of the mean token NLL, so a
    comparison and a training run's ``ppl`` are one formula (None where it overflows, as there)."""
    return perplexity(mean_token_nll(handle, texts, max_length=max_length))


def greedy_agreement(reference: Sequence[int], candidate: Sequence[int]) -> float:
    """Share of positions where two greedy outputs pick the same token (over the longer length)."""
    n = max(len(reference), len(candidate))
    if n == 0:
        return 1.0
    return sum(a == b for a, b in zip(reference, candidate, strict=False)) / n
