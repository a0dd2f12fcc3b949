"""Test helper shared by the stepper tests: greedy decode logits through a registry stepper or the full forward."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from aigc_lab.infer.backends import STEPPERS
from aigc_lab.infer.kv_cache import reserved_cache
from aigc_lab.infer.stepper import DecodeRequest
from aigc_lab.models.compat import cache_kwargs, cache_of


def entry(name: str) -> Any:
    return next(e for e in STEPPERS if e.name == name)


def refusal(name: str, model: Any, kind: str = "causal") -> str | None:
    """Why the registry's stepper ``name`` refuses ``model`` (None when it applies)."""
    return entry(name).refusal(SimpleNamespace(kind=kind), model, DecodeRequest())


def decode_logits(model: Any, stepper: str | None, steps: int = 12, capacity: int | None = None,
                  prompt: int = 9) -> tuple[torch.Tensor, Any]:
    """Logits of ``steps`` greedy steps after a ``prompt``-token prompt, and the cache, with the registry's
    ``stepper`` (None: the model's full forward). Fails if that stepper refuses the model."""
    ids = torch.arange(prompt).view(1, prompt) % model.config.vocab_size
    capacity = capacity or prompt + steps
    got = []
    if stepper is not None:
        reason = refusal(stepper, model)
        assert reason is None, f"{stepper} refused the model: {reason}"
        s = entry(stepper).build(model, capacity)
        logits = s.prefill(ids, None)
        for _ in range(steps):
            logits = s.step([int(logits[0].argmax())])
            got.append(logits.clone())
        return torch.stack(got), s.cache
    cache = reserved_cache(model, capacity)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **cache_kwargs(cache))
    for _ in range(steps):
        tok = out.logits[:, -1].argmax(-1).view(1, 1)
        with torch.inference_mode():
            out = model(input_ids=tok, use_cache=True, **cache_kwargs(cache_of(out)))
        got.append(out.logits[:, -1].clone())
    return torch.stack(got), cache
