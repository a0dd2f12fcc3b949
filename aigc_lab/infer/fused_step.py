"""A whole decode step in one call to the engine's C++ kernel: GPT-2 (``Gpt2Decoder``) and the Llama family
(Llama, Mistral, Qwen2, Qwen3: ``LlamaDecoder``), both in ``cpu_kernels.cpp``.

The lean step (``lean_step.py``) still dispatches a tensor operation for every layer norm, split and view,
cache append, SDPA, GELU and residual add around GPT-2-small's 49 matrix-vector products. On a small
CPU that is a sizeable share of each step, time in which no weight streams (figures in
benchmarks/RESULTS.md). ``Gpt2Decoder`` does the same computation for one new token of one sequence in
C++: the products on the layers' own kernel ``Product`` s (fp32 Linear / Conv1D, or dynamic int8, as the
twin made them; no weight is copied), layer norms and residuals in place, the new key and value written
straight into the engine's reserved cache, attention over it with the heads split over the threads, and
torch's own GELU kernel. Logits agree with the full forward to float rounding (the sums run in another
order), and greedy tokens with transformers' ``generate`` (tested). ``LlamaDecoder`` does the same for
the Llama family: RMSNorms, q/k/v (Qwen3's per-head norms), the model's own rotary tables (computed once
for every position the cache holds, so only rotary types whose frequencies never change with the length),
grouped-query attention, ``down(silu(gate) * up)``.

It applies where the lean step applies (eval, SDPA, no hooks, the reserved cache) and the model is the
engine's kernel twin with a product on every layer (``fused_gpt2_refusal`` / ``fused_llama_refusal`` say why
not otherwise). ``FusedStepper`` owns the cache: when the run outgrows it, it reserves twice the room and builds
the decoder again over the new buffers. ``extend`` (speculative decoding's verification of several tokens) is
one call too: the same layers over all the rows, the fp32 products as one matrix product each, so the weights
stream once for the whole draft rather than once a token.
"""

from __future__ import annotations

from typing import Any

from .kernel_build import kernels
from .kernel_layers import is_twin, kernel_product
from .kv_cache import reserved_cache
from .lean_step import gpt2_refusal, llama_refusal, prefill, rewind
from .stepper import last_logits

# config.activation_function -> torch's GELU approximation (what transformers runs for it)
_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


# rotary types whose frequencies do not depend on the sequence length (a table per position is then exact)
_STATIC_ROPE = ("default", "linear", "llama3", "yarn")


def _fp32(*tensors: Any) -> bool:
    import torch

    return all(t.dtype == torch.float32 and t.is_contiguous() and t.device.type == "cpu" for t in tensors)


def _missing_products(modules: list[Any]) -> bool:
    return any(kernel_product(m) is None for m in modules)


def _twin_refusal(model: Any, family_refusal: Any) -> str | None:
    """The lean step's conditions for the family, then: the model is the kernel twin."""
    return family_refusal(model) or (None if is_twin(model) else "needs the kernel layers")


def fused_gpt2_refusal(model: Any) -> str | None:
    """Why the kernel's ``Gpt2Decoder`` cannot run ``model`` (None when it can)."""
    reason = _twin_refusal(model, gpt2_refusal)
    if reason is not None:
        return reason
    cfg, gpt = model.config, model.transformer
    blocks = list(gpt.h)
    if cfg.activation_function not in _GELU:
        return f"activation {cfg.activation_function!r} is not one the kernel computes"
    if _missing_products([m for b in blocks for m in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj)]
                         + [model.lm_head]):
        return "a linear layer has no kernel product (not fp32 or int8)"
    norms = [b.ln_1 for b in blocks] + [b.ln_2 for b in blocks] + [gpt.ln_f]
    if any(n.eps != cfg.layer_norm_epsilon or not _fp32(n.weight, n.bias) for n in norms):
        return "its layer norms are not fp32 with one epsilon"
    if not _fp32(gpt.wte.weight, gpt.wpe.weight):
        return "its embedding tables are not fp32"
    return None


def fused_llama_refusal(model: Any) -> str | None:
    """Why the kernel's ``LlamaDecoder`` cannot run ``model`` (None when it can)."""
    reason = _twin_refusal(model, llama_refusal)
    if reason is not None:
        return reason
    cfg, inner = model.config, model.model
    layers = list(inner.layers)
    attns, mlps = [layer.self_attn for layer in layers], [layer.mlp for layer in layers]
    if cfg.hidden_act != "silu":
        return f"activation {cfg.hidden_act!r} is not SiLU"
    if getattr(inner.rotary_emb, "rope_type", None) not in _STATIC_ROPE:
        return f"rotary type {getattr(inner.rotary_emb, 'rope_type', None)!r} changes with the length"
    if getattr(cfg, "pretraining_tp", 1) != 1:
        return "pretraining_tp != 1"
    if _missing_products([getattr(a, n) for a in attns for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
                         + [getattr(m, n) for m in mlps for n in ("gate_proj", "up_proj", "down_proj")]
                         + [model.lm_head]):
        return "a linear layer has no kernel product (not fp32 or int8)"
    norms = [x for layer in layers for x in (layer.input_layernorm, layer.post_attention_layernorm)] + [inner.norm]
    qk_norms = [(a.q_norm, a.k_norm) for a in attns if hasattr(a, "q_norm")]
    eps = norms[0].variance_epsilon
    if qk_norms and len(qk_norms) != len(attns):
        return "only some layers have q/k norms"
    if any(n.variance_epsilon != eps or not _fp32(n.weight) for n in norms + [x for pair in qk_norms for x in pair]):
        return "its RMSNorms are not fp32 with one epsilon"
    if not _fp32(inner.embed_tokens.weight):
        return "its embedding table is not fp32"
    if any(a.head_dim != attns[0].head_dim or a.scaling != attns[0].scaling for a in attns):
        return "its layers differ in head size or scaling"
    if any(getattr(a, "sliding_window", None) for a in attns):
        return "sliding-window attention"
    import torch

    with torch.inference_mode():
        cos, _ = inner.rotary_emb(inner.embed_tokens.weight[:1].view(1, 1, -1),
                                  position_ids=torch.zeros((1, 1), dtype=torch.long))
    if cos.shape[-1] != attns[0].head_dim:
        return "its rotary embedding covers only part of each head"
    return None


class FusedStepper:
    """One sequence on the kernel twin of GPT-2 or a Llama-family model: each token one kernel call that writes
    the new key and value into the reserved cache itself."""

    def __init__(self, model: Any, capacity: int, build: Any) -> None:
        self.model, self.build = model, build  # gpt2_decoder or llama_decoder
        self.cache = reserved_cache(model, capacity)
        self.decoder: Any = None
        self.capacity = 0

    def _attach(self) -> None:
        self.decoder = self.build(self.model, self.cache)
        self.capacity = self.cache.layers[0].storage[0].shape[-2]

    def prefill(self, ids: Any, mask: Any | None) -> Any:
        out = prefill(self.model, ids, mask, self.cache)  # the twin's layers run many rows on torch's path
        self._attach()
        return last_logits(out)

    def _room(self, n: int) -> int:
        """The cache's length, after making room for ``n`` more positions (twice the room, a decoder over it)."""
        layers = self.cache.layers
        pos = layers[0].get_seq_length()
        if pos + n > self.capacity:
            for layer in layers:
                layer.reserve(max(2 * self.capacity, pos + n))
            self._attach()
        return pos

    def _advance(self, n: int) -> None:
        for layer in self.cache.layers:  # the cache holds the new positions, as after the full forward
            layer.advance(n)

    def step(self, ids: list[int]) -> Any:
        pos = self._room(1)  # first: it may build a new decoder
        logits = self.decoder.step(ids[0], pos)
        self._advance(1)
        return logits.view(1, -1)

    def extend(self, ids: list[int]) -> Any:
        """Logits [len(ids), vocab]: every row in one kernel call, each weight read once for all of them."""
        pos = self._room(len(ids))
        logits = self.decoder.extend(ids, pos)
        self._advance(len(ids))
        return logits

    def greedy(self, token: int, n: int, penalized: list[int] | None = None, penalty: float = 1.0) -> list[int]:
        """The next ``n`` greedy tokens after ``token`` (each argmax fed back; with ``penalty`` != 1 the repetition
        penalty on ``penalized`` and the new tokens first) in one kernel call, as a draft proposes them; the cache
        then holds ``token`` and the first n - 1 of them."""
        pos = self._room(n)
        tokens = self.decoder.greedy(token, pos, n, penalized or [], penalty)
        self._advance(n)
        return tokens.tolist()

    def rewind(self, n: int) -> None:
        rewind(self.cache, n)


def _buffers(cache: Any) -> tuple[list[Any], list[Any]]:
    storage = [layer.storage for layer in cache.layers]
    return [k for k, _ in storage], [v for _, v in storage]


def llama_decoder(model: Any, cache: Any) -> Any:
    """The kernel's ``LlamaDecoder`` over ``model`` (a twin ``fused_llama_refusal`` accepts) and ``cache``."""
    import torch

    cfg, inner = model.config, model.model
    layers = list(inner.layers)
    attns, mlps = [layer.self_attn for layer in layers], [layer.mlp for layer in layers]

    def products(parents: list[Any], name: str) -> list[Any]:
        return [kernel_product(getattr(x, name)) for x in parents]

    qk_norms = [(a.q_norm, a.k_norm) for a in attns if hasattr(a, "q_norm")]
    head_dim = attns[0].head_dim
    keys, values = _buffers(cache)
    capacity = keys[0].shape[-2]
    with torch.inference_mode():  # the model's own tables, every position the cache holds
        positions = torch.arange(capacity).view(1, -1)
        cos, sin = inner.rotary_emb(inner.embed_tokens.weight[:1].view(1, 1, -1), position_ids=positions)
    return kernels().LlamaDecoder(
        inner.embed_tokens.weight.detach(), [layer.input_layernorm.weight.detach() for layer in layers],
        products(attns, "q_proj"), products(attns, "k_proj"), products(attns, "v_proj"),
        [q.weight.detach() for q, _ in qk_norms], [k.weight.detach() for _, k in qk_norms],
        products(attns, "o_proj"), [layer.post_attention_layernorm.weight.detach() for layer in layers],
        products(mlps, "gate_proj"), products(mlps, "up_proj"), products(mlps, "down_proj"),
        inner.norm.weight.detach(), kernel_product(model.lm_head), keys, values,
        cos.float().reshape(capacity, head_dim).clone(), sin.float().reshape(capacity, head_dim).clone(),
        cfg.num_attention_heads, cfg.num_key_value_heads, head_dim, inner.norm.variance_epsilon,
        float(attns[0].scaling))


def gpt2_decoder(model: Any, cache: Any) -> Any:
    """The kernel's ``Gpt2Decoder`` over ``model`` (a twin ``fused_gpt2_refusal`` accepts) and ``cache``."""
    cfg, gpt = model.config, model.transformer
    blocks = list(gpt.h)

    def products(name: str, part: str) -> list[Any]:
        return [kernel_product(getattr(getattr(b, part), name)) for b in blocks]

    keys, values = _buffers(cache)
    return kernels().Gpt2Decoder(
        gpt.wte.weight.detach(), gpt.wpe.weight.detach(),
        [b.ln_1.weight.detach() for b in blocks], [b.ln_1.bias.detach() for b in blocks],
        products("c_attn", "attn"), products("c_proj", "attn"),
        [b.ln_2.weight.detach() for b in blocks], [b.ln_2.bias.detach() for b in blocks],
        products("c_fc", "mlp"), products("c_proj", "mlp"),
        gpt.ln_f.weight.detach(), gpt.ln_f.bias.detach(), kernel_product(model.lm_head), keys, values,
        blocks[0].attn.num_heads, cfg.layer_norm_epsilon, float(blocks[0].attn.scaling), _GELU[cfg.activation_function])
