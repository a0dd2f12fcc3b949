"""A whole decode step in one call to the engine's C++ kernel: GPT-2 (``Gpt2Decoder``) and the Llama family
(Llama, Mistral, Qwen2, Qwen3: ``LlamaDecoder``), both in ``cpu_kernels.cpp``.

The lean step (``lean_step.py``) still dispatches a tensor operation for every layer norm, split and view,
cache append, SDPA, GELU and residual add around GPT-2-small's 49 matrix-vector products. On a
2-core CPU that is ~2.2 ms of a ~13 ms step (SDPA ~0.9 ms, the rest ~1.3 ms), a sixth of the time the
weights could stream in. ``Gpt2Decoder`` does the same computation for one new token of one sequence in
C++: the products on the layers' own kernel ``Product`` s (fp32 Linear / Conv1D, or dynamic int8, as the
twin made them; no weight is copied), layer norms and residuals in place, the new key and value written
straight into the engine's reserved cache, attention over it with the heads split over the threads, and
torch's own GELU kernel. Logits agree with the full forward to float rounding (the sums run in another
order), and greedy tokens with transformers' ``generate`` (tested). ``LlamaDecoder`` does the same for
the Llama family: RMSNorms, q/k/v (Qwen3's per-head norms), the model's own rotary tables (computed once
for every position the cache holds, so only rotary types whose frequencies never change with the length),
grouped-query attention, ``down(silu(gate) * up)``.

It applies where the lean step applies (eval, SDPA, no hooks, the reserved cache) and the model is the
engine's kernel twin with a product on every layer; ``fused_decoder`` returns None otherwise.
"""

from __future__ import annotations

from typing import Any

from .cpu_gemv import kernels
from .lean_step import StepOutput, lean_decoder, plain_decode, plain_gpt2, plain_llama

# config.activation_function -> torch's GELU approximation (what transformers runs for it)
_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


# rotary types whose frequencies do not depend on the sequence length (a table per position is then exact)
_STATIC_ROPE = ("default", "linear", "llama3", "yarn")


def fused_decoder(model: Any, cache: Any) -> Any | None:
    """``step(input_ids [1, 1]) -> StepOutput`` running each token as one kernel call, for the kernel twin of a
    plain GPT-2 or Llama-family model whose ``cache`` is the engine's reserved, prefilled cache; None where that
    does not apply."""
    if not getattr(model, "aigc_kernel_twin", False) or not plain_decode(model, cache):
        return None
    if any(layer._k is None or not _fp32(layer._k, layer._v) for layer in cache.layers):
        return None
    build = _gpt2 if plain_gpt2(model) else _llama if plain_llama(model) else None
    decoder = build(model, cache) if build is not None else None
    return None if decoder is None else _KernelSteps(model, cache, build, decoder)


class _KernelSteps:
    """The decode loop's step over a kernel decoder, keeping the cache's views current. When the cache is full
    (or was replaced) the lean step appends this token (the reserved cache doubles) and a decoder over the new
    buffers takes over (none if the builder now refuses: the lean step then runs the rest)."""

    def __init__(self, model: Any, cache: Any, build: Any, decoder: Any) -> None:
        self.model, self.cache, self.build = model, cache, build
        self.lean: Any = None
        self._attach(decoder)

    def _attach(self, decoder: Any) -> None:
        layers = self.cache.layers
        self.decoder = decoder
        self.buffers = [(layer, layer._k, layer._v) for layer in layers]
        self.capacity = layers[0]._k.shape[-2]

    def __call__(self, input_ids: Any) -> StepOutput:
        first, k0, _ = self.buffers[0]
        pos = first.get_seq_length()
        if self.decoder is None or pos >= self.capacity or first._k is not k0:
            self.lean = self.lean or lean_decoder(self.model, self.cache)
            out = self.lean(input_ids)
            if self.decoder is not None:  # the lean step reallocated the cache: a decoder over the new buffers
                self._attach(self.build(self.model, self.cache))
            return out
        logits = self.decoder.step(int(input_ids), pos)
        for layer, k, v in self.buffers:  # the cache holds the new position, as after the full forward
            layer.keys, layer.values = k[:, :, :pos + 1], v[:, :, :pos + 1]
        return StepOutput(logits, self.cache)


def _fp32(*tensors: Any) -> bool:
    import torch

    return all(t.dtype == torch.float32 and t.is_contiguous() and t.device.type == "cpu" for t in tensors)


def _llama(model: Any, cache: Any) -> Any | None:
    import torch

    cfg, inner = model.config, model.model
    layers = list(inner.layers)
    rotary = inner.rotary_emb
    if (len(cache.layers) != len(layers) or cfg.hidden_act != "silu"
            or getattr(rotary, "rope_type", None) not in _STATIC_ROPE
            or getattr(cfg, "pretraining_tp", 1) != 1):
        return None
    attns, mlps = [layer.self_attn for layer in layers], [layer.mlp for layer in layers]
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    products = {n: [getattr(getattr(a, n), "aigc_product", None) for a in attns] for n in names}
    products.update({n: [getattr(getattr(m, n), "aigc_product", None) for m in mlps]
                     for n in ("gate_proj", "up_proj", "down_proj")})
    head = getattr(model.lm_head, "aigc_product", None)
    norms = [x for layer in layers for x in (layer.input_layernorm, layer.post_attention_layernorm)] + [inner.norm]
    qk_norms = [(a.q_norm, a.k_norm) for a in attns if hasattr(a, "q_norm")]
    eps = norms[0].variance_epsilon
    head_dim = attns[0].head_dim
    if (head is None or any(p is None for ps in products.values() for p in ps)
            or qk_norms and len(qk_norms) != len(attns)
            or any(n.variance_epsilon != eps or not _fp32(n.weight) for pair in qk_norms for n in pair)
            or any(n.variance_epsilon != eps or not _fp32(n.weight) for n in norms)
            or not _fp32(inner.embed_tokens.weight)
            or any(a.head_dim != head_dim or a.scaling != attns[0].scaling for a in attns)
            or any(getattr(a, "sliding_window", None) for a in attns)):
        return None
    capacity = cache.layers[0]._k.shape[-2]
    with torch.inference_mode():  # the model's own tables, every position the cache holds
        positions = torch.arange(capacity).view(1, -1)
        cos, sin = rotary(inner.embed_tokens.weight[:1].view(1, 1, -1), position_ids=positions)
    if cos.dtype != torch.float32 or cos.shape[-1] != head_dim:
        return None
    return kernels().LlamaDecoder(
        inner.embed_tokens.weight.detach(), [layer.input_layernorm.weight.detach() for layer in layers],
        products["q_proj"], products["k_proj"], products["v_proj"],
        [q.weight.detach() for q, _ in qk_norms], [k.weight.detach() for _, k in qk_norms],
        products["o_proj"], [layer.post_attention_layernorm.weight.detach() for layer in layers],
        products["gate_proj"], products["up_proj"], products["down_proj"],
        inner.norm.weight.detach(), head,
        [layer._k for layer in cache.layers], [layer._v for layer in cache.layers],
        cos.reshape(capacity, head_dim).clone(), sin.reshape(capacity, head_dim).clone(),
        cfg.num_attention_heads, cfg.num_key_value_heads, head_dim, eps, float(attns[0].scaling))


def _gpt2(model: Any, cache: Any) -> Any | None:
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
            or any(n.eps != cfg.layer_norm_epsilon or not _fp32(n.weight, n.bias) for n in norms)
            or not _fp32(*tables)):
        return None
    return kernels().Gpt2Decoder(
        tables[0].detach(), tables[1].detach(),
        [b.ln_1.weight.detach() for b in blocks], [b.ln_1.bias.detach() for b in blocks],
        products[0::4], products[1::4],
        [b.ln_2.weight.detach() for b in blocks], [b.ln_2.bias.detach() for b in blocks],
        products[2::4], products[3::4],
        gpt.ln_f.weight.detach(), gpt.ln_f.bias.detach(), head,
        [layer._k for layer in layers], [layer._v for layer in layers],
        blocks[0].attn.num_heads, cfg.layer_norm_epsilon, float(blocks[0].attn.scaling), act)
