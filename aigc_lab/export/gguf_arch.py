"""Architecture -> GGUF: the hyper-parameter keys and the tensor map llama.cpp expects, per model family.

GPT-2 (``gpt2``) and the Llama family: Llama and Mistral (``llama``), Qwen2 (``qwen2``), Qwen3 (``qwen3``).
Each tensor is described by its GGUF name, numpy shape and a function giving its float32 values, so a whole
file can be planned (and refused) before anything is written. Layouts: GPT-2's ``Conv1D`` weights are stored
(in, out) and are transposed; llama.cpp's ``llama`` graph applies rotary embeddings to interleaved pairs where
transformers rotates halves, so q/k rows are permuted (as llama.cpp's own converter does); Qwen keeps halves.
Every parameter of the model must be consumed by the map, or the export is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExportError

ARCHS: dict[str, str] = {"gpt2": "gpt2", "llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


@dataclass(frozen=True)
class TensorPlan:
    """One GGUF tensor: name, numpy shape (ggml's dims reversed), kind and a loader of its float32 values."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "embed" (token/position embeddings), "output", "weight" (2-D) or "vector" (norms, biases)
    load: Callable[[], Any]


@dataclass
class ArchPlan:
    """The GGUF architecture name, its hyper-parameters (``GGUFWriter.add_<key>`` -> value) and its tensors."""

    arch: str
    hparams: dict[str, Any]
    tensors: list[TensorPlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def write(self, writer: Any) -> None:
        for key, value in self.hparams.items():
            getattr(writer, f"add_{key}")(value)


class _Params:
    """The model's parameters by name; records which were used, to refuse a model with weights we would drop."""

    def __init__(self, model: Any) -> None:
        self._params = dict(model.named_parameters(remove_duplicate=False))
        self.used: set[str] = set()

    def get(self, name: str) -> Any:
        if name not in self._params:
            raise ExportError(f"expected the parameter {name!r}, which this model does not have: its layout differs "
                              "from the architecture's; it cannot be exported")
        self.used.add(name)
        return self._params[name]

    def has(self, name: str) -> bool:
        return name in self._params

    def check_all_used(self, model_type: str) -> None:
        ids = {id(self._params[n]) for n in self.used}
        left = [n for n, p in self._params.items() if n not in self.used and id(p) not in ids]
        if left:
            raise ExportError(f"this {model_type} model has parameters the GGUF map does not carry "
                              f"({', '.join(left[:5])}{'...' if len(left) > 5 else ''}): exporting would drop them")


def _np(param: Any, transform: Callable[[Any], Any] | None = None) -> Callable[[], Any]:
    def load() -> Any:
        import numpy as np

        a = param.detach().to("cpu").float().numpy()
        return np.ascontiguousarray(transform(a) if transform else a)

    return load


def _tensor(plan: ArchPlan, params: _Params, gguf_name: str, name: str, kind: str = "weight",
            transform: Callable[[Any], Any] | None = None) -> None:
    p = params.get(name)
    shape = tuple(p.shape)[::-1] if transform is _transpose else tuple(p.shape)  # a permutation keeps the shape
    plan.tensors.append(TensorPlan(gguf_name, shape, "vector" if p.dim() == 1 else kind, _np(p, transform)))


def _transpose(a: Any) -> Any:
    return a.T


def _tied(model: Any) -> bool:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is None or out.weight is inp.weight or out.weight.data_ptr() == inp.weight.data_ptr()


def _gpt2(model: Any) -> ArchPlan:
    c = model.config
    if c.activation_function not in _TANH_GELU:
        raise ExportError(f"GPT-2 with activation {c.activation_function!r}: llama.cpp's gpt2 graph uses the tanh "
                          "GELU (gelu_new) only")
    if not c.scale_attn_weights or c.scale_attn_by_inverse_layer_idx:
        raise ExportError("GPT-2 with non-default attention scaling (scale_attn_weights=False or "
                          "scale_attn_by_inverse_layer_idx=True) is not what llama.cpp's gpt2 graph computes")
    plan = ArchPlan("gpt2", {
        "context_length": c.n_positions, "embedding_length": c.n_embd, "feed_forward_length": c.n_inner or 4 * c.n_embd,
        "block_count": c.n_layer, "head_count": c.n_head, "layer_norm_eps": c.layer_norm_epsilon,
    })
    ps = _Params(model)
    _tensor(plan, ps, "token_embd.weight", "transformer.wte.weight", "embed")
    _tensor(plan, ps, "position_embd.weight", "transformer.wpe.weight", "embed")
    for i in range(c.n_layer):
        h, b = f"transformer.h.{i}", f"blk.{i}"
        for gguf, hf, tr in (("attn_norm", "ln_1", None), ("attn_qkv", "attn.c_attn", _transpose),
                             ("attn_output", "attn.c_proj", _transpose), ("ffn_norm", "ln_2", None),
                             ("ffn_up", "mlp.c_fc", _transpose), ("ffn_down", "mlp.c_proj", _transpose)):
            _tensor(plan, ps, f"{b}.{gguf}.weight", f"{h}.{hf}.weight", transform=tr)
            _tensor(plan, ps, f"{b}.{gguf}.bias", f"{h}.{hf}.bias")
    _tensor(plan, ps, "output_norm.weight", "transformer.ln_f.weight")
    _tensor(plan, ps, "output_norm.bias", "transformer.ln_f.bias")
    if not _tied(model):
        _tensor(plan, ps, "output.weight", "lm_head.weight", "output")
    ps.check_all_used("gpt2")
    return plan


def _permute(n_head: int) -> Callable[[Any], Any]:
    """Rows of q/k from rotate-half order to llama.cpp's interleaved pairs (llama.cpp's converter's ``permute``)."""
    def permute(w: Any) -> Any:
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    return permute


def _rope(c: Any, plan: ArchPlan) -> None:
    rope = dict(getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {})
    kind = rope.get("rope_type", rope.get("type", "default"))
    theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    plan.hparams["rope_freq_base"] = float(theta)
    if kind == "linear":
        import gguf

        plan.hparams["rope_scaling_type"] = gguf.RopeScalingType.LINEAR
        plan.hparams["rope_scaling_factor"] = float(rope["factor"])
    elif kind != "default":
        raise ExportError(f"rotary scaling {kind!r} is not exported yet (default and linear are)")
    if getattr(c, "partial_rotary_factor", 1.0) != 1.0:
        raise ExportError("a partial rotary factor is not exported yet")


def _llama_family(model: Any) -> ArchPlan:
    c = model.config
    arch = ARCHS[c.model_type]
    if c.hidden_act != "silu":
        raise ExportError(f"{c.model_type} with activation {c.hidden_act!r}: llama.cpp's graph uses SiLU")
    if getattr(c, "use_sliding_window", False):
        raise ExportError("sliding-window attention (use_sliding_window=True) is not in llama.cpp's qwen2 graph")
    heads, kv = c.num_attention_heads, c.num_key_value_heads or c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    context = c.max_position_embeddings
    plan = ArchPlan(arch, {})
    window = getattr(c, "sliding_window", None) if c.model_type == "mistral" else None
    if window and window < context:
        context = window
        plan.notes.append(f"context_length set to the sliding window ({window}): llama.cpp's llama graph attends "
                          "to the whole context, which equals Mistral's only within its window")
    plan.hparams.update({
        "context_length": context, "embedding_length": c.hidden_size, "feed_forward_length": c.intermediate_size,
        "block_count": c.num_hidden_layers, "head_count": heads, "head_count_kv": kv,
        "layer_norm_rms_eps": c.rms_norm_eps, "key_length": head_dim, "value_length": head_dim,
        "rope_dimension_count": head_dim, "vocab_size": c.vocab_size,
    })
    _rope(c, plan)
    ps = _Params(model)
    _tensor(plan, ps, "token_embd.weight", "model.embed_tokens.weight", "embed")
    permute = arch == "llama"
    for i in range(c.num_hidden_layers):
        h, b = f"model.layers.{i}", f"blk.{i}"
        _tensor(plan, ps, f"{b}.attn_norm.weight", f"{h}.input_layernorm.weight")
        for gguf, hf, n in (("attn_q", "q_proj", heads), ("attn_k", "k_proj", kv), ("attn_v", "v_proj", 0),
                            ("attn_output", "o_proj", 0)):
            tr = _permute(n) if permute and n else None
            _tensor(plan, ps, f"{b}.{gguf}.weight", f"{h}.self_attn.{hf}.weight", transform=tr)
            if ps.has(f"{h}.self_attn.{hf}.bias"):
                _tensor(plan, ps, f"{b}.{gguf}.bias", f"{h}.self_attn.{hf}.bias", transform=tr)
        for gguf, hf in (("attn_q_norm", "q_norm"), ("attn_k_norm", "k_norm")):
            if ps.has(f"{h}.self_attn.{hf}.weight"):
                _tensor(plan, ps, f"{b}.{gguf}.weight", f"{h}.self_attn.{hf}.weight")
        _tensor(plan, ps, f"{b}.ffn_norm.weight", f"{h}.post_attention_layernorm.weight")
        for gguf, hf in (("ffn_gate", "gate_proj"), ("ffn_up", "up_proj"), ("ffn_down", "down_proj")):
            _tensor(plan, ps, f"{b}.{gguf}.weight", f"{h}.mlp.{hf}.weight")
            if ps.has(f"{h}.mlp.{hf}.bias"):
                _tensor(plan, ps, f"{b}.{gguf}.bias", f"{h}.mlp.{hf}.bias")
    _tensor(plan, ps, "output_norm.weight", "model.norm.weight")
    if not _tied(model):
        _tensor(plan, ps, "output.weight", "lm_head.weight", "output")
    ps.check_all_used(c.model_type)
    return plan


def plan_arch(model: Any) -> ArchPlan:
    """The GGUF plan of a ``transformers`` causal LM, or an ``ExportError`` naming what is not supported."""
    model_type = getattr(model.config, "model_type", type(model).__name__)
    if model_type not in ARCHS:
        raise ExportError(f"GGUF export supports {', '.join(sorted(ARCHS))} models, not {model_type!r}; "
                          "export it as target='hf' (a folder for vLLM / TGI / transformers) instead")
    return _gpt2(model) if model_type == "gpt2" else _llama_family(model)
