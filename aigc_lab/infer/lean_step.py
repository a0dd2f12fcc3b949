"""A lean decode step for GPT-2: one new token of one sequence through the model's own modules, without
transformers' generic forward around them.

At batch 1 a GPT-2-small decode step streams ~500 MB of weights, about 18 ms on a 2-core CPU with the
engine's kernel; transformers' forward added ~5 ms more per token around those products: ~150
``nn.Module`` calls, causal-mask and position bookkeeping, cache plumbing and output dataclasses.
This step runs the same computation as ``GPT2LMHeadModel.forward`` for one token (embedding + position,
then per block: layer norm, ``c_attn``, cache append, SDPA, ``c_proj``, residual, layer norm, MLP,
residual; final norm; ``lm_head``), calling each layer's ``forward`` directly: whatever those layers are
(the kernel twin's, int8 dynamic-quantized ``Linear``, plain torch) they run unchanged. It applies only
where that equivalence holds (``lean_decoder`` returns None otherwise: the engine then calls the model).
"""

from __future__ import annotations

from typing import Any

from .kv_cache import is_reserved


class StepOutput:
    """What the decode loop reads from a model output: the last position's logits and the cache."""

    __slots__ = ("logits", "past_key_values")

    def __init__(self, logits: Any, past_key_values: Any) -> None:
        self.logits, self.past_key_values = logits, past_key_values


def _plain_gpt2(model: Any) -> bool:
    from transformers import GPT2LMHeadModel

    if type(model) is not GPT2LMHeadModel or model.training:
        return False
    cfg = model.config
    if (cfg.add_cross_attention or cfg.scale_attn_by_inverse_layer_idx or cfg.reorder_and_upcast_attn
            or getattr(cfg, "_attn_implementation", None) != "sdpa"):
        return False
    # hooks (accelerate offloading, user hooks) run only through nn.Module.__call__: keep the full forward
    return not any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "_hf_hook") for m in model.modules())


def lean_decoder(model: Any, cache: Any) -> Any | None:
    """``step(input_ids [1, 1]) -> StepOutput`` for a plain ``GPT2LMHeadModel`` in eval mode with SDPA
    attention whose ``cache`` is the engine's reserved cache, already prefilled; None for anything else."""
    import torch
    import torch.nn.functional as F

    if cache is None or not _plain_gpt2(model) or not all(is_reserved(layer) for layer in cache.layers):
        return None
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

    def run(input_ids: Any) -> StepOutput:
        with torch.inference_mode():
            return step(input_ids)

    return run
