"""A lean decode step: one new token of one sequence through the model's own layers, without transformers'
generic forward around them.

At batch 1 a decode step is ~50 matrix-vector products; transformers' model-level forward adds mask and
position bookkeeping, cache plumbing, output dataclasses, decorators and (GPT-2) ~150
``nn.Module.__call__`` s around them: Python work in which no weight streams, which matters most on small
shapes, where the products are small (figures in benchmarks/RESULTS.md). Two families are mirrored, each
exactly as its forward runs for one new token of one unpadded sequence:

* GPT-2 (``GPT2LMHeadModel``): embedding + position, then per block layer norm, ``c_attn``, cache append,
  SDPA, ``c_proj``, residual, layer norm, MLP, residual; final norm; ``lm_head``. Each layer's
  ``forward`` is called directly, so whatever those layers are (the kernel twin's, int8
  dynamic-quantized ``Linear``, plain torch) they run unchanged.
* Llama, Mistral, Qwen2, Qwen3: embedding, rotary table, each decoder layer's own ``forward`` (no mask:
  the full forward's mask is None here too), final norm, ``lm_head``.

Logits equal the full forward's bit for bit (tested on torch, kernel-twin, int8 and GQA layers). It
applies only where that holds: eval mode, SDPA attention, no hooks, transformers' cache classes (the stepper
prefills into the engine's reserved cache, ``kv_cache.py``, and owns it); ``lean_refusal`` says why not
otherwise, and the registry (``infer/backends.py``) picks another stepper.
"""

from __future__ import annotations

from typing import Any

from .kv_cache import all_reserved, reserved_cache
from .stepper import accepts, last_logits


def plain_refusal(model: Any) -> str | None:
    """Why one token's forward of ``model`` is not just its layers in order (None when it is): eval mode, SDPA
    attention, no hooks, and transformers' cache classes, reserved by the engine. Step decoders need this."""
    if model.training:
        return "the model is in training mode (dropout)"
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if attn != "sdpa":
        return f"attention is {attn!r}, not SDPA"
    # hooks (accelerate offloading, user hooks) run only through nn.Module.__call__
    if any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "_hf_hook") for m in model.modules()):
        return "the model has forward hooks"
    cache = reserved_cache(model, 1)
    if not all_reserved(cache):
        return "its cache layers cannot all be reserved (sliding-window or custom caches)"
    return None


def gpt2_refusal(model: Any) -> str | None:
    """Why ``model`` is not a plain ``GPT2LMHeadModel`` (standard blocks: no cross-attention, no variants)."""
    from transformers import GPT2LMHeadModel

    if type(model) is not GPT2LMHeadModel:
        return f"{type(model).__name__} is not GPT2LMHeadModel"
    cfg = model.config
    if cfg.add_cross_attention or cfg.scale_attn_by_inverse_layer_idx or cfg.reorder_and_upcast_attn:
        return "a GPT-2 attention variant (cross-attention, inverse-layer scaling or upcast reordering)"
    return plain_refusal(model)


LLAMA_FAMILY = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


def llama_refusal(model: Any) -> str | None:
    """Why ``model`` is not a Llama, Mistral, Qwen2 or Qwen3 causal LM (the classes themselves, every layer)."""
    import transformers

    if type(model) not in tuple(getattr(transformers, name) for name in LLAMA_FAMILY):
        return f"{type(model).__name__} is not one of {', '.join(LLAMA_FAMILY)}"
    if len(model.model.layers) != model.config.num_hidden_layers:
        return "it has fewer decoder layers than its config says"
    return plain_refusal(model)


def prefill(model: Any, ids: Any, mask: Any | None, cache: Any) -> Any:
    """The prompt's forward into ``cache``; logits of the last position only where the model can."""
    import torch

    from ..models.compat import cache_kwargs

    extra: dict[str, Any] = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    if mask is not None:
        extra.update(attention_mask=mask, position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0))
    if cache is not None:
        extra.update(cache_kwargs(cache))
    with torch.inference_mode():  # per call, never across a yield: the consumer's thread must not stay in it
        return model(input_ids=ids, use_cache=True, **extra)


def extend(model: Any, cache: Any, ids: list[int]) -> Any:
    """The model's forward over several new tokens of one sequence into ``cache``; logits [len(ids), vocab]."""
    import torch

    from ..models.compat import cache_kwargs

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids]), use_cache=True, **cache_kwargs(cache)).logits[0]


def rewind(cache: Any, n: int) -> None:
    """Drop the last ``n`` positions of every layer of the engine's reserved ``cache``."""
    for layer in cache.layers:
        layer.rewind(n)


class LeanStepper:
    """One sequence of GPT-2 or a Llama-family model: the model's own layers called in order for each token."""

    def __init__(self, model: Any, capacity: int, family_step: Any) -> None:
        self.model, self.family_step = model, family_step  # gpt2_step or llama_step
        self.cache = reserved_cache(model, capacity)
        self._step: Any = None

    def prefill(self, ids: Any, mask: Any | None) -> Any:
        out = prefill(self.model, ids, mask, self.cache)
        self._step = self.family_step(self.model, self.cache)
        return last_logits(out)

    def step(self, ids: list[int]) -> Any:
        import torch

        with torch.inference_mode():
            return self._step(torch.tensor([ids]))[:, -1, :]

    def extend(self, ids: list[int]) -> Any:
        return extend(self.model, self.cache, ids)

    def rewind(self, n: int) -> None:
        rewind(self.cache, n)


def llama_step(model: Any, cache: Any) -> Any:
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

    def step(input_ids: Any) -> Any:
        x = embed(input_ids)
        pos = torch.tensor([[first.get_seq_length()]], device=x.device)
        rope = rotary(x, position_ids=pos)
        for layer in layers:  # one new query, no padding: SDPA needs no mask (the full forward passes None too)
            x = layer(x, attention_mask=None, position_embeddings=rope, position_ids=pos, use_cache=True,
                      **cache_kw)
        return head(norm(x))

    return step


def gpt2_step(model: Any, cache: Any) -> Any:
    import torch.nn.functional as F

    gpt = model.transformer
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

    def step(input_ids: Any) -> Any:
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
        return head(layer_norm(x, shape, ln_f.weight, ln_f.bias, ln_f.eps))

    return step
