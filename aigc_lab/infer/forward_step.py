"""Steppers that call the model's own ``forward`` for each token: any causal LM (one prompt or a padded batch)
and encoder-decoder models. They run every model the engine accepts; the registry prefers the lean and fused
steppers where those apply (``infer/backends.py``).

A causal model that uses transformers' cache classes decodes into the engine's reserved cache
(``kv_cache.py``: room for the whole run, appended in place); others (the LSTM's recurrent state) hand their own
cache back in each output, and the stepper feeds it to the next call.
"""

from __future__ import annotations

from typing import Any

from .kv_cache import all_reserved, reserved_cache
from .lean_step import extend, prefill, rewind
from .stepper import last_logits


class ForwardStepper:
    """A causal LM's full forward per token, for one prompt or a left-padded batch (mask and positions kept)."""

    def __init__(self, model: Any, capacity: int) -> None:
        self.model, self.device = model, next(model.parameters()).device
        self.cache = reserved_cache(model, capacity)
        self.mask: Any = None
        self.pos: Any = None

    def prefill(self, ids: Any, mask: Any | None) -> Any:
        out = prefill(self.model, ids, mask, self.cache)
        self._carry(out)
        if mask is not None:
            self.mask, self.pos = mask, (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -1:]
        return last_logits(out)

    def _carry(self, out: Any) -> None:
        from ..models.compat import cache_of

        self.cache = cache_of(out)  # the same reserved cache, or the model's own (an LSTM's state)

    def step(self, ids: list[int]) -> Any:
        import torch

        from ..models.compat import cache_kwargs

        inp = torch.tensor(ids, device=self.device).view(len(ids), 1)
        extra: dict[str, Any] = {}
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones((len(ids), 1))], dim=1)
            self.pos = self.pos + 1
            extra.update(attention_mask=self.mask, position_ids=self.pos)
        with torch.inference_mode():
            out = self.model(input_ids=inp, use_cache=True, **extra, **cache_kwargs(self.cache))
        self._carry(out)
        return last_logits(out)

    @property
    def rewindable(self) -> bool:
        """One sequence in the engine's reserved cache (not an LSTM's state, not a batch)."""
        return self.mask is None and all_reserved(self.cache)

    def extend(self, ids: list[int]) -> Any:
        logits = extend(self.model, self.cache, ids)
        return logits

    def rewind(self, n: int) -> None:
        rewind(self.cache, n)


class Seq2SeqStepper:
    """An encoder-decoder model: the encoder once over the prompts, then the decoder one token at a time."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.encoded: Any = None
        self.mask: Any = None
        self.cache: Any = None

    def _decode(self, inp: Any) -> Any:
        import torch

        from ..models.compat import cache_kwargs, cache_of

        with torch.inference_mode():
            out = self.model(encoder_outputs=self.encoded, attention_mask=self.mask, decoder_input_ids=inp,
                             use_cache=True, **cache_kwargs(self.cache))
        self.cache = cache_of(out)
        return last_logits(out)

    def prefill(self, ids: Any, mask: Any | None) -> Any:
        import torch

        self.mask = mask
        with torch.inference_mode():
            self.encoded = self.model.get_encoder()(input_ids=ids, attention_mask=mask)
        start = torch.full((ids.shape[0], 1), self.model.config.decoder_start_token_id, device=ids.device)
        return self._decode(start)

    def step(self, ids: list[int]) -> Any:
        import torch

        return self._decode(torch.tensor(ids, device=self.encoded[0].device).view(len(ids), 1))
