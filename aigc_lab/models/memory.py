"""How much memory a model needs, before anything is allocated: to load it, and to fine-tune it.

One estimator for both questions (``estimate_memory`` before loading, from a config; ``training_memory``
before a run, from the loaded model), so the catalog, ``load()`` and ``finetune()`` agree. Parameters are
counted exactly by instantiating the config on the meta device (no memory, no weights). Loading needs the
weights in the chosen dtype plus a fixed runtime overhead (the model's code and the loader's buffers,
measured at 10-20 MB). Fine-tuning trains fp32 master weights whatever the model's dtype (16-bit models
train under autocast, ``train/precision.py``): per trainable parameter its fp32 copy, gradient and the two
AdamW moments, plus the activations kept for the backward pass of one batch (``batch_size`` x ``seq_len``
tokens; transformer layers follow Korthikanti et al. 2022, plus the fp32 logits). LoRA freezes the weights
and trains rank-``lora_rank`` adapters. The activation figures are estimates; the load figure is checked
against measured RSS in the tests.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from ..errors import ModelTooLargeError, TrainingMemoryError
from .devices import DTYPE_BYTES, dtype_name, load_dtype
from .resolve import kind_of, resolve_config

MB = 2**20
RUNTIME_OVERHEAD_BYTES = 16 * MB
LORA_TARGETS = ("q_proj", "v_proj", "c_attn", "q", "v")  # Llama/Qwen, GPT-2 (fused qkv), T5
MASTER_BYTES = 4  # fp32 master copy of a trained weight
GRAD_ADAM_BYTES = 4 + 8  # its fp32 gradient and two fp32 AdamW moments
LOGIT_COPIES = 3  # fp32 logits, their softmax and their gradient

__all__ = ["DTYPE_BYTES", "MB", "Counts", "MemoryEstimate", "Shape", "TrainMemory", "available_memory",
           "check_fits", "check_training_fits", "count", "dtype_name", "estimate_memory", "lora_params",
           "training_memory"]


@dataclass(frozen=True)
class Shape:
    """The sizes the activation formula needs, read from a config (attribute names differ by family)."""

    kind: str
    layers: float  # seq2seq: encoder layers + 1.5 x decoder layers (cross-attention)
    hidden: int
    heads: int
    vocab: int


def shape(config: Any) -> Shape:
    """``Shape`` of a ``transformers`` config (GPT-2 ``n_embd``, T5 ``d_model``/``num_layers``... included)."""
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None) or getattr(config, "n_embd", 0)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None) or 1
    kind = kind_of(config)
    if kind == "seq2seq":  # decoder layers carry cross-attention too: count them 1.5 times
        layers = layers + 1.5 * (getattr(config, "num_decoder_layers", None) or layers)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "num_heads", None) or 1
    return Shape(kind=kind, layers=layers, hidden=int(hidden or 0), heads=int(heads),
                 vocab=int(getattr(config, "vocab_size", 0) or 0))


def activation_bytes(s: Shape, *, batch: int, seq: int, half: bool, checkpointing: bool = False) -> int:
    """Activations one batch keeps for the backward pass (``half``: under 16-bit autocast).

    Transformers: ``s*b*h*(34 + 5*a*s/h)`` bytes per layer at 16 bits (Korthikanti et al. 2022), doubled in
    fp32; with ``checkpointing`` only each layer's input is kept, plus one layer's activations while it is
    recomputed. The LSTM: gates, cell and hidden states and their nonlinearities per step and layer. Plus
    the fp32 logits, their softmax and gradient.
    """
    width = 2 if half else 4
    tokens = batch * seq
    if s.kind == "rnn":
        per_layer = tokens * s.hidden * 10 * width
    else:
        per_layer = tokens * s.hidden * (34 + 5 * s.heads * seq / max(s.hidden, 1)) * width / 2
    kept = (s.layers * tokens * s.hidden * width + per_layer) if checkpointing else s.layers * per_layer
    return int(kept + tokens * s.vocab * 4 * LOGIT_COPIES)


@dataclass(frozen=True)
class Counts:
    """What instantiating a config on the meta device tells: exact sizes, no memory used."""

    params: int
    buffer_bytes: int
    lora_params: int  # adapter parameters at rank 1 (multiply by the rank)
    shape: Shape


def lora_params(model: Any, targets: tuple[str, ...] = LORA_TARGETS, r: int = 1) -> int:
    """Exact adapter size: ``r * (in + out)`` per adapted 2-D weight whose module name is in ``targets``."""
    total = 0
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if name.rsplit(".", 1)[-1] in targets and weight is not None and weight.dim() == 2:
            total += r * sum(weight.shape)
    return total


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
    return Counts(params=params, buffer_bytes=buffer_bytes, lora_params=lora_params(model), shape=shape(config))


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


def estimate_memory(name_or_config: Any, dtype: Any = None, *, batch_size: int = 4, seq_len: int = 512,
                    lora_rank: int = 8) -> MemoryEstimate:
    """Memory to load ``name_or_config`` in ``dtype`` and to fine-tune it (full and LoRA), before loading it.

    ``name_or_config``: a catalog name, a hub id in the local cache, a local folder, ``starter:<arch>-<size>``
    (with the largest vocabulary of its size), a ``transformers`` config, or a dict with ``model_type``.
    ``dtype``: ``float32``, ``bfloat16``, ``float16`` or ``int8`` (weights only); default: the saved dtype, as
    ``load()``. Fine-tuning figures are the loaded model plus what ``training_memory`` adds (a trained copy).
    """
    config, label = resolve_config(name_or_config)
    dt = load_dtype(config, dtype)
    c = count(config)
    width = DTYPE_BYTES[dt]
    load = c.params * width + c.buffer_bytes + RUNTIME_OVERHEAD_BYTES
    acts = activation_bytes(c.shape, batch=batch_size, seq=seq_len, half=width < 4)
    full = None
    if dt != "int8":  # an fp32 master copy of every weight, its gradient and AdamW moments
        full = load + c.params * (MASTER_BYTES + GRAD_ADAM_BYTES) + acts
    lora = None
    if c.shape.kind != "rnn":  # adapters in fp32: weights, gradients, AdamW moments
        lora = load + c.lora_params * lora_rank * (MASTER_BYTES + GRAD_ADAM_BYTES) + acts
    return MemoryEstimate(name=label, kind=c.shape.kind, params=c.params, dtype=dt, load_bytes=load,
                          full_finetune_bytes=full, lora_bytes=lora, activation_bytes=acts,
                          batch_size=batch_size, seq_len=seq_len)


@dataclass(frozen=True)
class TrainMemory:
    """Bytes a run adds on top of the loaded model."""

    weights: int  # the trained copy (fp32 master weights; 0 when training in place an fp32 model)
    trainable: int  # gradients + AdamW moments of the trainable parameters (LoRA: adapter weights too)
    activations: int
    teacher: int

    @property
    def total(self) -> int:
        return self.weights + self.trainable + self.activations + self.teacher

    def __str__(self) -> str:
        return (f"{self.total / MB:,.0f} MB (model copy {self.weights / MB:,.0f}, grads+optimizer "
                f"{self.trainable / MB:,.0f}, activations {self.activations / MB:,.0f}, "
                f"teacher {self.teacher / MB:,.0f})")


def training_memory(model: Any, *, batch_size: int, seq_len: int, copy: bool, trainable_params: int | None = None,
                    teacher: Any = None, autocast: bool = False, checkpointing: bool = False) -> TrainMemory:
    """What fine-tuning ``model`` adds, before anything is allocated (``trainable_params``: LoRA adapter size;
    default: every parameter, a full fine-tune). ``copy``: the run trains a copy (default of ``finetune``);
    weights train as fp32 master copies either way (a 16-bit model trained in place is upcast)."""
    params = list(model.parameters())
    if trainable_params is None:
        trainable = sum(p.numel() for p in params) * GRAD_ADAM_BYTES
        weights = sum(p.numel() * (MASTER_BYTES if copy else MASTER_BYTES - p.element_size()) for p in params)
    else:  # LoRA: the frozen base is shared, not copied; adapters in fp32 with their gradients and moments
        trainable = trainable_params * (MASTER_BYTES + GRAD_ADAM_BYTES)
        weights = 0
    acts = activation_bytes(shape(model.config), batch=batch_size, seq=seq_len, half=autocast,
                            checkpointing=checkpointing)
    teacher_bytes = 0
    if teacher is not None:  # the teacher's fp32 logits and their softmax
        teacher_bytes = batch_size * seq_len * shape(teacher.model.config).vocab * 4 * 2
    return TrainMemory(weights=max(0, weights), trainable=trainable, activations=acts, teacher=teacher_bytes)


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



def check_training_fits(need: TrainMemory, *, device: Any, method: str, batch_size: int, seq_len: int) -> None:
    """Raise ``TrainingMemoryError`` with what to change when ``need`` exceeds the free memory of ``device``."""
    free = available_memory(device)
    if need.total <= free:
        return
    hints = []
    if method != "lora":
        hints.append("use method='lora' (only small adapters get gradients and optimizer state)")
    if batch_size > 1:
        hints.append(f"use a smaller batch_size (e.g. {max(1, batch_size // 2)}) with grad_accum to keep the "
                     "effective batch")
    if seq_len > 64:
        hints.append(f"use a shorter max_length (e.g. {seq_len // 2})")
    hints.append("or free memory (close other notebooks/kernels)")
    raise TrainingMemoryError(
        f"fine-tuning ({method}, batch {batch_size} x {seq_len} tokens) needs about {need}, but only "
        f"{free / MB:,.0f} MB is free on {device}. To fix it, " + "; ".join(hints) + ".")
