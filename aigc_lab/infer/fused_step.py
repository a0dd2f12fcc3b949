"""A whole GPT-2 decode step in one call to the engine's C++ kernel (``Gpt2Decoder`` in ``cpu_kernels.cpp``).

The lean step (``lean_step.py``) still dispatches ~200 tensor operations a token around GPT-2-small's 49
matrix-vector products: layer norms, splits and views, the cache append, SDPA, GELU, residual adds. On a
2-core CPU that is ~2.2 ms of a ~13 ms step (SDPA ~0.9 ms, the rest ~1.3 ms), a sixth of the time the
weights could stream in. ``Gpt2Decoder`` does the same computation for one new token of one sequence in
C++: the products on the layers' own kernel ``Product`` s (fp32 Linear / Conv1D, or dynamic int8, as the
twin made them; no weight is copied), layer norms and residuals in place, the new key and value written
straight into the engine's reserved cache, attention over it with the heads split over the threads, and
torch's own GELU kernel. Logits agree with the full forward to float rounding (the sums run in another
order), and greedy tokens with transformers' ``generate`` (tested).

It applies where the lean step applies to GPT-2 (eval, SDPA, no hooks, the reserved cache) and the model
is the engine's kernel twin with a product on every layer; ``fused_decoder`` returns None otherwise.
"""

from __future__ import annotations

from typing import Any

from .cpu_gemv import kernels
from .lean_step import StepOutput, lean_decoder, plain_decode, plain_gpt2

# config.activation_function -> torch's GELU approximation (what transformers runs for it)
_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


def fused_decoder(model: Any, cache: Any) -> Any | None:
    """``step(input_ids [1, 1]) -> StepOutput`` running each token as one kernel call, for the kernel twin of a
    plain GPT-2 whose ``cache`` is the engine's reserved, prefilled cache; None where that does not apply."""
    import torch

    if not getattr(model, "aigc_kernel_twin", False) or not plain_decode(model, cache) or not plain_gpt2(model):
        return None
    cfg, gpt = model.config, model.transformer
    act = _GELU.get(cfg.activation_function)
    blocks = list(gpt.h)
    layers = cache.layers
    products = [getattr(m, "aigc_product", None) for b in blocks
                for m in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj)]
    head = getattr(model.lm_head, "aigc_product", None)
    norms = [b.ln_1 for b in blocks] + [b.ln_2 for b in blocks] + [gpt.ln_f]
    tables = (gpt.wte.weight, gpt.wpe.weight)
    if (act is None or head is None or any(p is None for p in products) or len(layers) != len(blocks)
            or any(b.attn.is_cross_attention for b in blocks)
            or any(n.eps != cfg.layer_norm_epsilon or n.weight.dtype != torch.float32 for n in norms)
            or any(t.dtype != torch.float32 or not t.is_contiguous() for t in tables)
            or any(layer._k is None or not layer._k.is_contiguous() or layer._k.dtype != torch.float32
                   for layer in layers)):
        return None
    decoder = kernels().Gpt2Decoder(
        tables[0].detach(), tables[1].detach(),
        [b.ln_1.weight.detach() for b in blocks], [b.ln_1.bias.detach() for b in blocks],
        products[0::4], products[1::4],
        [b.ln_2.weight.detach() for b in blocks], [b.ln_2.bias.detach() for b in blocks],
        products[2::4], products[3::4],
        gpt.ln_f.weight.detach(), gpt.ln_f.bias.detach(), head,
        [layer._k for layer in layers], [layer._v for layer in layers],
        blocks[0].attn.num_heads, cfg.layer_norm_epsilon, float(blocks[0].attn.scaling), act)
    buffers = [(layer, layer._k, layer._v) for layer in layers]
    capacity = layers[0]._k.shape[-2]
    fallback: list[Any] = []

    def step(input_ids: Any) -> StepOutput:
        pos = layers[0].get_seq_length()
        if fallback or pos >= capacity or layers[0]._k is not buffers[0][1]:  # cache full or replaced
            if not fallback:
                fallback.append(lean_decoder(model, cache))
            return fallback[0](input_ids)
        logits = decoder.step(int(input_ids), pos)
        for layer, k, v in buffers:  # the cache holds the new position, as after the full forward
            layer.keys, layer.values = k[:, :, :pos + 1], v[:, :, :pos + 1]
        return StepOutput(logits, cache)

    return step
