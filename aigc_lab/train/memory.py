"""Memory check before training: estimate what the method and batch need, refuse early when it won't fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ModelTooLargeError

MB = 2**20


class TrainingMemoryError(ModelTooLargeError):
    """Fine-tuning with these settings would exceed the memory this machine (or GPU) has free."""


@dataclass(frozen=True)
class TrainMemory:
    """Bytes the run adds on top of what is already loaded."""

    weights: int  # the trained copy of the model (0 when training in place)
    trainable: int  # gradients + AdamW moments of the trainable parameters
    activations: int
    teacher: int

    @property
    def total(self) -> int:
        return self.weights + self.trainable + self.activations + self.teacher

    def __str__(self) -> str:
        return (f"{self.total / MB:,.0f} MB (model copy {self.weights / MB:,.0f}, grads+optimizer "
                f"{self.trainable / MB:,.0f}, activations {self.activations / MB:,.0f}, "
                f"teacher {self.teacher / MB:,.0f})")


def _dims(config: Any) -> tuple[int, int, int, int]:
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None) or getattr(config, "n_embd", 0)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None) or 1
    if getattr(config, "is_encoder_decoder", False):
        layers = layers + 1.5 * (getattr(config, "num_decoder_layers", None) or layers)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "num_heads", None) or 1
    return int(hidden or 0), int(layers), int(heads), int(getattr(config, "vocab_size", 0) or 0)


def lora_params(model: Any, targets: tuple[str, ...], r: int) -> int:
    """Exact adapter size: ``r * (in + out)`` per adapted 2-D weight."""
    total = 0
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if name.rsplit(".", 1)[-1] in targets and weight is not None and weight.dim() == 2:
            total += r * sum(weight.shape)
    return total


def estimate(model: Any, *, batch_size: int, seq_len: int, copy: bool, trainable_params: int | None = None,
             teacher: Any = None, autocast: bool = False, checkpointing: bool = False) -> TrainMemory:
    """Estimate for ``model`` before anything is allocated (``trainable_params``: LoRA adapter size; default all).

    Trainable parameters carry a gradient and two fp32 AdamW moments; activations follow Korthikanti et
    al. 2022 (``s*b*h*(34 + 5*a*s/h)`` bytes per layer at 16 bits, doubled in fp32) plus fp32 logits and
    their gradient. With ``checkpointing`` only each layer's input is kept, plus one layer's activations
    while it is recomputed.
    """
    params = list(model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    if trainable_params is None:
        trainable = sum(p.numel() * (p.element_size() + 8) for p in params)
    else:  # adapters in fp32: weights, gradients, two moments
        trainable = trainable_params * 16
    hidden, layers, heads, vocab = _dims(model.config)
    tokens = batch_size * seq_len
    width = 2 if autocast else 4
    per_layer = tokens * hidden * (34 + 5 * heads * seq_len / max(hidden, 1)) * width / 2
    acts = (layers * tokens * hidden * width + per_layer) if checkpointing else layers * per_layer
    acts += tokens * vocab * 4 * 3
    teacher_bytes = 0
    if teacher is not None:
        teacher_bytes = tokens * _dims(teacher.model.config)[3] * 4 * 2
    return TrainMemory(weights=weight_bytes if copy else 0, trainable=trainable, activations=int(acts),
                       teacher=teacher_bytes)


class PeakMemory:
    """How much memory a run added at its peak: sampled while it runs (``with PeakMemory(device) as m:``).

    CPU: the process's resident set, sampled every ``interval`` seconds on a daemon thread, minus what it
    was when the run started (the process-wide high-water mark would mix runs up). CUDA: the device's peak
    allocation since the start, minus the allocation at the start.
    """

    def __init__(self, device: Any = None, interval: float = 0.02) -> None:
        self.device, self.interval = device, interval
        self.start_mb = self.peak_mb = 0.0
        self._stop: Any = None

    @property
    def added_mb(self) -> float:
        """Peak minus the start (MB)."""
        return max(0.0, self.peak_mb - self.start_mb)

    def _cuda(self) -> Any:
        import sys

        torch = sys.modules.get("torch")
        dev = self.device
        if torch is not None and dev is not None and getattr(dev, "type", str(dev)) == "cuda":
            return torch.cuda
        return None

    def __enter__(self) -> PeakMemory:
        import threading

        cuda = self._cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats(self.device)
            self.start_mb = self.peak_mb = cuda.memory_allocated(self.device) / MB
            return self
        import psutil

        proc = psutil.Process()
        self.start_mb = self.peak_mb = proc.memory_info().rss / MB
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(self.interval):
                self.peak_mb = max(self.peak_mb, proc.memory_info().rss / MB)

        threading.Thread(target=sample, name="aigc-lab-peak-memory", daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        cuda = self._cuda()
        if cuda is not None:
            self.peak_mb = max(self.peak_mb, cuda.max_memory_allocated(self.device) / MB)
            return
        import psutil

        self._stop.set()
        self.peak_mb = max(self.peak_mb, psutil.Process().memory_info().rss / MB)


def available_memory(device: Any = None) -> int:
    """Bytes free on ``device`` (CUDA: free device memory; else available RAM). Tests monkeypatch this."""
    try:
        from ..models.memory import available_memory as models_available
    except ImportError:  # pragma: no cover - older models/ without the estimator
        import psutil

        return int(psutil.virtual_memory().available)
    return int(models_available(device))


def check(need: TrainMemory, *, device: Any, method: str, batch_size: int, seq_len: int) -> None:
    """Raise ``TrainingMemoryError`` with what to change when ``need`` exceeds the free memory."""
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
