"""A lean decode step: one new token of one sequence through the model's own layers, without transformers'
generic forward around them.

At batch 1 a decode step is ~50 matrix-vector products (GPT-2-small: ~17 ms of weights on a 2-core CPU
with the engine's kernel); transformers' model-level forward adds mask and position bookkeeping, cache
plumbing, output dataclasses, decorators and (GPT-2) ~150 ``nn.Module.__call__`` s around them: ~2 ms a
token, a tenth of the step (measured: 19.6 vs 17.6 ms, and 4.9x instead of 2.4x HF ``generate`` on the
tiny shape, where the products are small). Two families are mirrored, each exactly as its forward runs for
one new token of one unpadded sequence:

* GPT-2 (``GPT2LMHeadModel``): embedding + position, then per block layer norm, ``c_attn``, cache append,
  SDPA, ``c_proj``, residual, layer norm, MLP, residual; final norm; ``lm_head``. Each layer's
  ``forward`` is called directly, so whatever those layers are (the kernel twin's, int8
  dynamic-quantized ``Linear``, plain torch) they run unchanged.
* Llama, Mistral, Qwen2, Qwen3: embedding, rotary table, each decoder layer's own ``forward`` (no mask:
  the full forward's mask is None here too), final norm, ``lm_head``.

Logits equal the full forward's bit for bit (tested on torch, kernel-twin, int8 and GQA layers). It
applies only where that holds: eval mode, SDPA, no hooks, the engine's reserved cache; ``lean_decoder``
returns None otherwise and the engine calls the model.
"""

from __future__ import annotations

from typing import Any

from .kv_cache import is_reserved


class StepOutput:
    """What the decode loop reads from a model output: the last position's logits and the cache, under both
    names transformers has used for it (``models.compat.CACHE`` picks the installed one)."""

    __slots__ = ("logits", "cache", "past_key_values")

    def __init__(self, logits: Any, cache: Any) -> None:
        self.logits, self.cache, self.past_key_values = logits, cache, cache


def plain_decode(model: Any, cache: Any) -> bool:
    """Whether one token's forward of ``model`` is just its layers in order: eval mode, SDPA attention, no
    hooks, and the engine's reserved cache (already prefilled) as ``cache``. Step decoders need this."""
    return not (cache is None or not all(is_reserved(layer) for layer in cache.layers) or model.training
                or getattr(model.config, "_attn_implementation", None) != "sdpa"
                # hooks (accelerate offloading, user hooks) run only through nn.Module.__call__
                or any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "_hf_hook") for m in model.modules()))


def plain_gpt2(model: Any) -> bool:
    """A ``GPT2LMHeadModel`` whose blocks are the standard ones (no cross-attention, no attention variants)."""
    from transformers import GPT2LMHeadModel

    cfg = model.config
    return (type(model) is GPT2LMHeadModel and not cfg.add_cross_attention and not cfg.scale_attn_by_inverse_layer_idx
            and not cfg.reorder_and_upcast_attn)


def plain_llama(model: Any) -> bool:
    """A Llama, Mistral, Qwen2 or Qwen3 causal LM (the classes themselves) with all its decoder layers."""
    from transformers import LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM

    return (type(model) in (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)
            and len(model.model.layers) == model.config.num_hidden_layers)


def lean_decoder(model: Any, cache: Any) -> Any | None:
    """``step(input_ids [1, 1]) -> StepOutput`` for a plain GPT-2 or Llama-family causal LM in eval mode with
    SDPA attention whose ``cache`` is the engine's reserved cache, already prefilled; None for anything else."""
    if not plain_decode(model, cache):
        return None
    if plain_gpt2(model):
        return _gpt2_decoder(model, cache)
    return _llama_decoder(model, cache) if plain_llama(model) else None


def _in_inference_mode(step: Any) -> Any:
    """``step`` run under ``torch.inference_mode`` per call (never across the decode loop's yields)."""
    import torch

    def run(input_ids: Any) -> StepOutput:
        with torch.inference_mode():
            return step(input_ids)

    return run


def _llama_decoder(model: Any, cache: Any) -> Any:
    """Llama, Mistral, Qwen2, Qwen3: ``*Model.forward``'s decode path for one token without its mask building,
    output dataclasses or decorators; each decoder layer's own ``forward`` does the rest unchanged. (Sliding
    window layers never get here: the reserved cache reserves full-attention layers only.)"""
    import torch

    from ..models.compat import cache_kwargs

    cache_kw = cache_kwargs(cache)
    inner = model.model
    embed, rotary, norm, head = inner.embed_tokens.forward, inner.rotary_emb, inner.norm.forward, model.lm_head.forward
    layers = [layer.forward for layer in inner.layers]
    first = cache.layers[0]

    def step(input_ids: Any) -> StepOutput:
        x = embed(input_ids)
        pos = torch.tensor([[first.get_seq_length()]], device=x.device)
        rope = rotary(x, position_ids=pos)
        for layer in layers:  # one new query, no padding: SDPA needs no mask (the full forward passes None too)
            x = layer(x, attention_mask=None, position_embeddings=rope, position_ids=pos, use_cache=True,
                      **cache_kw)
        return StepOutput(head(norm(x)), cache)

    return _in_inference_mode(step)


def _gpt2_decoder(model: Any, cache: Any) -> Any | None:
    import torch.nn.functional as F

    gpt = model.transformer
    if len(cache.layers) != len(gpt.h):
        return None
    wte, wpe = gpt.wte.weight, gpt.wpe.weight
    width = wte.shape[1]
    blocks = []
    for block, layer in zip(gpt.h, cache.layers, strict=True):
        attn, mlp = block.attn, block.mlp
        blocks.append((block.ln_1.weight, block.ln_1.bias, block.ln_1.eps, attn.c_attn.forward, attn.split_size,
                       attn.head_dim, attn.scaling, layer.update, attn.c_proj.forward,
                       block.ln_2.weight, block.ln_2.bias, block.ln_2.eps, mlp.c_fc.forward, mlp.act.forward,
                       mlp.c_proj.forward))
    ln_f, head = gpt.ln_f, model.lm_head.forward
    shape = (width,)
    layer_norm, sdpa, embedding = F.layer_norm, F.scaled_dot_product_attention, F.embedding
    first = cache.layers[0]

    def step(input_ids: Any) -> StepOutput:
        pos = first.get_seq_length()
        x = embedding(input_ids, wte) + wpe[pos]
        for (w1, b1, e1, c_attn, split, head_dim, scale, update, c_proj, w2, b2, e2, c_fc, act, proj) in blocks:
            q, k, v = c_attn(layer_norm(x, shape, w1, b1, e1)).split(split, dim=2)
            q = q.view(1, 1, -1, head_dim).transpose(1, 2)
            keys, values = update(k.view(1, 1, -1, head_dim).transpose(1, 2),
                                  v.view(1, 1, -1, head_dim).transpose(1, 2))
            a = sdpa(q, keys, values, scale=scale).transpose(1, 2).reshape(1, 1, -1)
            x = c_proj(a) + x
            x = x + proj(act(c_fc(layer_norm(x, shape, w2, b2, e2))))
        return StepOutput(head(layer_norm(x, shape, ln_f.weight, ln_f.bias, ln_f.eps)), cache)

    return _in_inference_mode(step)
