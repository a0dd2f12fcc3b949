"""Architecture configs of well-known hub models, embedded so the catalog and the memory estimate work offline.

The values are the public ``config.json`` fields that decide the shapes (layers, widths, heads, vocabulary,
tied embeddings); parameter counts come from instantiating them on the meta device, never from a formula.
"""

from __future__ import annotations

from typing import Any

_GPT2 = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_head": 12,
         "activation_function": "gelu_new", "bos_token_id": 50256, "eos_token_id": 50256}
_T5 = {"model_type": "t5", "vocab_size": 32128, "d_kv": 64, "relative_attention_num_buckets": 32,
       "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}
_QWEN2 = {"model_type": "qwen2", "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
          "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": True, "bos_token_id": 151643,
          "eos_token_id": 151643, "use_sliding_window": False,
          "dtype": "bfloat16"}  # the published checkpoints' dtype: load() keeps it, so the catalog judges it
_SMOL = {"model_type": "llama", "vocab_size": 49152, "hidden_act": "silu", "rms_norm_eps": 1e-5,
         "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 0, "dtype": "bfloat16"}

KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {**_GPT2, "n_embd": 768, "n_layer": 12},
    "distilgpt2": {**_GPT2, "n_embd": 768, "n_layer": 6},
    "gpt2-medium": {**_GPT2, "n_embd": 1024, "n_layer": 24, "n_head": 16},
    "t5-small": {**_T5, "d_model": 512, "d_ff": 2048, "num_layers": 6, "num_heads": 8, "feed_forward_proj": "relu"},
    "t5-base": {**_T5, "d_model": 768, "d_ff": 3072, "num_layers": 12, "num_heads": 12, "feed_forward_proj": "relu"},
    "google/flan-t5-small": {**_T5, "d_model": 512, "d_ff": 1024, "num_layers": 8, "num_heads": 6,
                             "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
    "google/flan-t5-base": {**_T5, "d_model": 768, "d_ff": 2048, "num_layers": 12, "num_heads": 12,
                            "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
    "HuggingFaceTB/SmolLM2-135M": {**_SMOL, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                                   "num_attention_heads": 9, "num_key_value_heads": 3,
                                   "max_position_embeddings": 8192, "rope_theta": 100000.0},
    "HuggingFaceTB/SmolLM2-360M": {**_SMOL, "hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                                   "num_attention_heads": 15, "num_key_value_heads": 5,
                                   "max_position_embeddings": 8192, "rope_theta": 100000.0},
    "Qwen/Qwen2.5-0.5B": {**_QWEN2, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                          "num_attention_heads": 14, "num_key_value_heads": 2},
    "Qwen/Qwen2.5-1.5B": {**_QWEN2, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                          "num_attention_heads": 12, "num_key_value_heads": 2},
}

# other spellings of the same hub models
ALIASES: dict[str, str] = {
    "openai-community/gpt2": "gpt2", "distilbert/distilgpt2": "distilgpt2",
    "openai-community/gpt2-medium": "gpt2-medium", "google-t5/t5-small": "t5-small", "google-t5/t5-base": "t5-base",
    "flan-t5-small": "google/flan-t5-small", "flan-t5-base": "google/flan-t5-base",
}


def canonical(name: str) -> str | None:
    """The catalog name for ``name`` (itself or an alias), or None when it is not a known model."""
    name = ALIASES.get(name, name)
    return name if name in KNOWN_CONFIGS else None


def known_config(name: str) -> Any | None:
    """A ``transformers`` config for a known hub model (no network), or None when ``name`` is not known."""
    key = canonical(name)
    if key is None:
        return None
    from transformers import AutoConfig

    values = dict(KNOWN_CONFIGS[key])
    return AutoConfig.for_model(values.pop("model_type"), **values)
