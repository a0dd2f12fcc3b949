"""Test helper shared by the step-decoder tests: greedy decode logits through a step decoder or the full forward."""

from __future__ import annotations

from typing import Any

import torch

from aigc_lab.infer.kv_cache import reserved_cache
from aigc_lab.models.compat import cache_kwargs, cache_of


def decode_logits(model: Any, maker: Any, steps: int = 12, capacity: int | None = None,
                  prompt: int = 9) -> tuple[torch.Tensor, Any]:
    """Logits of ``steps`` greedy steps after a ``prompt``-token prompt, and the cache, with ``maker(model,
    cache)``'s step (None: the model's full forward). Fails if ``maker`` refuses the model."""
    ids = torch.arange(prompt).view(1, prompt) % model.config.vocab_size
    cache = reserved_cache(model, capacity or prompt + steps)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **cache_kwargs(cache))
    step = maker(model, cache) if maker else None
    if maker:
        assert step is not None, f"{maker.__name__} refused the model"
    got = []
    for _ in range(steps):
        tok = out.logits[:, -1].argmax(-1).view(1, 1)
        if step is not None:
            out = step(tok)
        else:
            with torch.inference_mode():
                out = model(input_ids=tok, use_cache=True, **cache_kwargs(cache_of(out)))
        got.append(out.logits[:, -1].clone())
    return torch.stack(got), cache
