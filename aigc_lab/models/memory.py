"""How much memory a model needs, computed before anything is allocated, and how much this machine has free.

Parameters are counted exactly by instantiating the config on the meta device (no memory, no weights).
Loading needs the weights in the chosen dtype plus a fixed runtime overhead (the model's code and the
loader's buffers, measured at 10-20 MB). Fine-tuning adds, per trainable
parameter, its gradient and the two AdamW moments (fp32; plus an fp32 master copy when the weights are
16-bit), and the activations kept for the backward pass of one batch (``batch_size`` x ``seq_len`` tokens,
no gradient checkpointing; transformer layers follow Korthikanti et al. 2022, plus the fp32 logits).
LoRA freezes the weights and trains rank-``lora_rank`` adapters on the attention query/value projections.
The activation figures are estimates; the load figure is checked against measured RSS in the tests.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from ..errors import ModelTooLargeError
from .resolve import kind_of, resolve_config

MB = 2**20
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "float64": 8}
RUNTIME_OVERHEAD_BYTES = 16 * MB
LORA_TARGETS = ("q_proj", "v_proj", "c_attn", "q", "v")  # Llama/Qwen, GPT-2 (fused qkv), T5


def dtype_name(dtype: Any) -> str:
    """``"bfloat16"`` from ``torch.bfloat16``, ``"bfloat16"``, ``"bf16"``; raise ValueError on anything else."""
    text = str(dtype).removeprefix("torch.")
    text = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}.get(
        text, text)
    if text not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_BYTES)}")
    return text


def config_dtype(config: Any) -> str:
    """The dtype the weights load in when none is asked for (transformers' ``dtype="auto"``): the saved one."""
    saved = getattr(config, "dtype", None)
    try:
        return dtype_name(saved) if saved else "float32"
    except ValueError:
        return "float32"


@dataclass(frozen=True)
class Counts:
    """What instantiating a config on the meta device tells: exact sizes, no memory used."""

    params: int
    buffer_bytes: int
    lora_params: int  # adapter parameters at rank 1 (multiply by the rank)
    layers: int
    hidden: int
    heads: int
    vocab: int


@functools.lru_cache(maxsize=256)
def _count(config_json: str) -> Counts:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from . import lstm  # noqa: F401  (registers the LSTM with the Auto classes)

    values = json.loads(config_json)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    auto = AutoModelForSeq2SeqLM if kind_of(config) == "seq2seq" else AutoModelForCausalLM
    with torch.device("meta"):
        try:
            model = auto.from_config(config)
        except ValueError:  # not a language model class: count the bare model
            model = AutoModel.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # tied weights are counted once, as in memory
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    lora = 0
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if name.rsplit(".", 1)[-1] in LORA_TARGETS and weight is not None and weight.dim() == 2:
            lora += sum(weight.shape)  # A: r x in, B: out x r
    layers = getattr(config, "num_hidden_layers", 0) or 0
    if kind_of(config) == "seq2seq":  # decoder layers carry cross-attention too: count them 1.5 times
        layers = layers + 1.5 * (getattr(config, "num_decoder_layers", None) or layers)
    return Counts(params=params, buffer_bytes=buffer_bytes, lora_params=lora, layers=layers,
                  hidden=getattr(config, "hidden_size", 0) or 0, heads=getattr(config, "num_attention_heads", 0) or 0,
                  vocab=getattr(config, "vocab_size", 0) or 0)


def count(config: Any) -> Counts:
    """Exact parameter count (and a few sizes) of a ``transformers`` config, from the meta device; cached."""
    values = config.to_dict()
    values["model_type"] = config.model_type
    for key in ("dtype", "torch_dtype", "transformers_version", "architectures", "_name_or_path"):
        values.pop(key, None)
    return _count(json.dumps(values, sort_keys=True, default=str))


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed to load and to fine-tune one model in one dtype (``None``: not applicable)."""

    name: str
    kind: str
    params: int
    dtype: str
    load_bytes: int
    full_finetune_bytes: int | None
    lora_bytes: int | None
    activation_bytes: int
    batch_size: int
    seq_len: int

    @property
    def load_mb(self) -> float:
        return self.load_bytes / MB

    @property
    def full_finetune_mb(self) -> float | None:
        return None if self.full_finetune_bytes is None else self.full_finetune_bytes / MB

    @property
    def lora_mb(self) -> float | None:
        return None if self.lora_bytes is None else self.lora_bytes / MB

    def __str__(self) -> str:
        full = f"{self.full_finetune_mb:,.0f} MB" if self.full_finetune_mb is not None else "n/a"
        lora = f"{self.lora_mb:,.0f} MB" if self.lora_mb is not None else "n/a"
        return (f"{self.name} ({self.kind}, {self.params / 1e6:,.1f}M params, {self.dtype}): load {self.load_mb:,.0f} "
                f"MB; fine-tune full {full}, LoRA {lora} (batch {self.batch_size} x {self.seq_len} tokens)")


def _activations(c: Counts, kind: str, width: int, batch: int, seq: int) -> int:
    tokens = batch * seq
    if kind == "rnn":  # gates, cell and hidden states and their nonlinearities per step and layer
        per_layer = tokens * c.hidden * 10 * width
    else:  # Korthikanti et al. 2022: s*b*h*(34 + 5*a*s/h) bytes per layer at 16 bits
        per_layer = tokens * c.hidden * (34 + 5 * c.heads * seq / max(c.hidden, 1)) * width / 2
    logits = tokens * c.vocab * 4 * 2  # fp32 logits and their gradient
    return int(c.layers * per_layer + logits)


def estimate_memory(name_or_config: Any, dtype: Any = None, *, batch_size: int = 4, seq_len: int = 512,
                    lora_rank: int = 8) -> MemoryEstimate:
    """Memory to load ``name_or_config`` in ``dtype`` and to fine-tune it (full and LoRA), before loading it.

    ``name_or_config``: a catalog name, a hub id in the local cache, a local folder, ``starter:<arch>-<size>``
    (with the largest vocabulary of its size), a ``transformers`` config, or a dict with ``model_type``.
    ``dtype``: ``float32``, ``bfloat16``, ``float16`` or ``int8`` (weights only); default: the saved dtype.
    """
    config, label = resolve_config(name_or_config)
    dt = dtype_name(dtype) if dtype is not None else config_dtype(config)
    c = count(config)
    kind = kind_of(config)
    width = DTYPE_BYTES[dt]
    weights = c.params * width + c.buffer_bytes
    load = weights + RUNTIME_OVERHEAD_BYTES
    acts = _activations(c, kind, 2 if width < 4 else 4, batch_size, seq_len)
    full = None
    if dt != "int8":  # weights + grads in dt, AdamW moments in fp32, an fp32 master copy of 16-bit weights
        full = load + c.params * (width + 8 + (4 if width < 4 else 0)) + acts
    lora = None
    if kind != "rnn":  # adapters in fp32: weights, gradients, AdamW moments
        lora = load + c.lora_params * lora_rank * 16 + acts
    return MemoryEstimate(name=label, kind=kind, params=c.params, dtype=dt, load_bytes=load,
                          full_finetune_bytes=full, lora_bytes=lora, activation_bytes=acts,
                          batch_size=batch_size, seq_len=seq_len)


def _cgroup_free() -> int | None:
    """Free memory under this container's cgroup limit (v2 or v1), if there is a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - usage)
    return None


def available_memory(device: Any = None) -> int:
    """Bytes free for a new model on ``device``: on CUDA the device's free memory, otherwise the machine's
    available RAM (``psutil``; bounded by the container's memory limit). Tests monkeypatch this."""
    dev = str(device or "cpu")
    if dev.startswith("cuda"):
        import torch

        index = int(dev.split(":")[1]) if ":" in dev else torch.cuda.current_device()
        return int(torch.cuda.mem_get_info(index)[0])
    import psutil

    free = int(psutil.virtual_memory().available)
    limited = _cgroup_free()
    return min(free, limited) if limited is not None else free


def default_device() -> str:
    """``cuda`` when a GPU is usable, else ``cpu`` (the device the catalog's ``fits`` column speaks about)."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def check_fits(estimate: MemoryEstimate, device: Any = None) -> None:
    """Raise ``ModelTooLargeError`` when loading would not fit in the free memory of ``device``."""
    free = available_memory(device)
    if estimate.load_bytes <= free:
        return
    hints = ["choose a smaller model (see al.models.catalog(), e.g. 'starter:gpt-small')"]
    if estimate.dtype in ("float32", "float64"):
        half = estimate.params * 2 + RUNTIME_OVERHEAD_BYTES
        hints.append(f"load it in a lower precision (dtype='bfloat16' needs about {half / MB:,.0f} MB)")
    hints.append("or free memory (close other notebooks/kernels)")
    raise ModelTooLargeError(
        f"{estimate.name} needs about {estimate.load_mb:,.0f} MB to load in {estimate.dtype} "
        f"({estimate.params / 1e6:,.1f}M params), but only {free / MB:,.0f} MB is free on "
        f"{str(device or 'cpu')}. To fix it, " + "; ".join(hints) + ".")

