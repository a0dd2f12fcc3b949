"""The RNN baseline: an LSTM language model that is a real ``transformers`` model.

``LSTMConfig`` (model type ``aigc-lstm``) and ``LSTMForCausalLM`` are registered with ``AutoConfig`` and
``AutoModelForCausalLM`` when ``aigc_lab.models`` is imported, so a saved LSTM folder loads back through
``al.models.load(folder)`` (or ``AutoModelForCausalLM.from_pretrained``) like any hub model.

``forward`` follows the causal-LM contract the decode engine and trainers use: ``input_ids`` in,
``.logits`` out, the recurrent state ``(h, c)`` as the output's cache (``.cache``, or ``.past_key_values``
before transformers 5.24: ``compat.CACHE``; fed back under either name to continue from the last token),
and ``.loss`` when ``labels`` are given (next-token cross-entropy, ``-100`` ignored).
The attention mask is accepted and ignored: an LSTM reads left to right, so use right padding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .compat import CACHE, cache_kwargs, cache_of

MODEL_TYPE = "aigc-lstm"


class LSTMConfig(PretrainedConfig):
    """Sizes of the LSTM language model. The output layer is tied to the input embedding."""

    model_type = MODEL_TYPE
    keys_to_ignore_at_inference = [CACHE]

    vocab_size: int = 8192
    hidden_size: int = 256
    num_hidden_layers: int = 2
    dropout: float = 0.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None


class LSTMForCausalLM(PreTrainedModel, GenerationMixin):
    """Embedding -> multi-layer LSTM -> tied linear head over the vocabulary."""

    config_class = LSTMConfig
    base_model_prefix = "lstm"
    main_input_name = "input_ids"
    _tied_weights_keys = {"lm_head.weight": "embed.weight"}

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.lstm = nn.LSTM(config.hidden_size, config.hidden_size, num_layers=config.num_hidden_layers,
                            batch_first=True, dropout=config.dropout if config.num_hidden_layers > 1 else 0.0)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LSTM):
            bound = module.hidden_size ** -0.5  # torch's own LSTM initialisation
            for weight in module.parameters():
                nn.init.uniform_(weight, -bound, bound)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: Any = None, use_cache: bool | None = True, labels: torch.Tensor | None = None,
                past_key_values: Any = None, **kwargs: Any) -> CausalLMOutputWithPast:
        state = _as_state(cache if cache is not None else past_key_values)
        out, (h, c) = self.lstm(self.embed(input_ids), state)
        logits = self.lm_head(out)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                                               labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits,
                                      **cache_kwargs((h, c) if use_cache is not False else None))

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
        """For ``model.generate``: with a state, only the newest token is fed."""
        state = _as_state(kwargs.get(CACHE))
        if state is not None:
            input_ids = input_ids[:, -1:]
        return {"input_ids": input_ids, "use_cache": True, **cache_kwargs(state)}

    def _update_model_kwargs_for_generation(self, outputs: Any, model_kwargs: dict[str, Any],
                                            is_encoder_decoder: bool = False, num_new_tokens: int = 1,
                                            **kwargs: Any) -> dict[str, Any]:
        model_kwargs[CACHE] = cache_of(outputs)
        return model_kwargs


def _as_state(past: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(h, c)`` from what a caller passes as the cache (``None`` or an empty HF cache: start fresh)."""
    if isinstance(past, tuple | list) and len(past) == 2 and all(isinstance(t, torch.Tensor) for t in past):
        return past[0], past[1]
    return None


AutoConfig.register(MODEL_TYPE, LSTMConfig, exist_ok=True)
AutoModelForCausalLM.register(LSTMConfig, LSTMForCausalLM, exist_ok=True)
