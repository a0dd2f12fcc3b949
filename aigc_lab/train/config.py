"""``TrainConfig``: every hyper-parameter of a fine-tuning run, with defaults, validated once up front."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from ..errors import TrainConfigError

METHODS = ("full", "lora", "distill")
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # fp16 is refused with what to use (train/precision.py)
TRAIN_ON = ("assistant", "all")

__all__ = ["METHODS", "PRECISIONS", "SCHEDULES", "TRAIN_ON", "TrainConfig", "TrainConfigError"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run. ``max_steps`` (optimizer steps) wins over ``epochs`` when set."""

    method: str = "full"
    lr: float | None = None  # None: 5e-5 full/distill, 2e-4 LoRA
    schedule: str = "linear"
    warmup_steps: int | None = None  # None: warmup_ratio of the total
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.0
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 256
    max_target_length: int = 64
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    seed: int = 0
    eval_every: int | None = None  # None: once at the end when there is validation data
    eval_batches: int | None = None  # cap on validation batches per eval (None: all)
    eval_generate: int = 64  # examples scored by greedy exact match (pairs only; 0 = off)
    patience: int | None = None  # early stopping: evals without a better val_loss
    precision: str = "auto"  # auto: bf16 autocast on CUDA with bf16 and for 16-bit models; fp32 weights always
    packing: bool = True  # causal LMs: concatenate texts into max_length blocks (conversations: whole ones per row)
    # conversations: "assistant" puts loss on the replies and their end-of-turn tokens only, "all" on every token
    train_on: str = "assistant"
    # conversations: None = the tokenizer's own template; a name (chatml, llama-3, alpaca, plain) or Jinja source
    chat_template: str | None = None
    # causal LMs (GPT-2, Llama, Mistral, Qwen, GPT-NeoX), one process, no autocast: output layer and loss fused
    # (train/fused_loss.py): the same loss to float rounding, less work and memory per step
    fused_loss: bool = True
    # recompute each layer's activations in the backward pass instead of keeping them (about a third more
    # compute, most of the activation memory saved). None: on for LoRA, whose memory is mostly
    # activations once gradients and optimizer state are gone; off for full and distill (speed first).
    gradient_checkpointing: bool | None = None
    save_every: int | None = None  # checkpoint every N steps (and always on cancel/interrupt and at the end)
    keep_last: int = 2  # periodic checkpoints kept (older ones deleted)
    output_dir: str | None = None  # None: ./aigc_runs/<run id>
    save_final: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0  # peft's default; > 0 keeps a dropped copy of every adapted layer's input
    lora_targets: tuple[str, ...] | None = None  # None: chosen per architecture
    # conversations: also train the embedding rows of the chat template's marker tokens (peft's trainable tokens),
    # which a model that never saw them needs to open and close turns; every other row stays frozen
    lora_marker_tokens: bool = True
    temperature: float = 2.0  # distillation
    alpha: float = 0.5  # distillation: weight of the KL term (1 - alpha on the task loss)
    progress: bool = True
    log_every: int = 1  # telemetry: publish train.step every N steps
    device: str | None = None  # None: where the model is

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 2e-4 if self.method == "lora" else 5e-5

    @property
    def checkpointing(self) -> bool:
        """Whether this run recomputes activations (``gradient_checkpointing``, resolved per method)."""
        if self.gradient_checkpointing is not None:
            return bool(self.gradient_checkpointing)
        return self.method == "lora"

    def validate(self) -> TrainConfig:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if self.train_on not in TRAIN_ON:
            problems.append(f"train_on must be one of {', '.join(TRAIN_ON)}, not {self.train_on!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.learning_rate <= 0:
            problems.append("lr must be > 0")
        for name in ("batch_size", "grad_accum", "max_length", "max_target_length", "lora_r", "log_every"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("max_steps", "eval_every", "save_every", "patience", "eval_batches"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                problems.append(f"{name} must be >= 1 (or None)")
        if self.max_steps is None and self.epochs <= 0:
            problems.append("epochs must be > 0 (or give max_steps)")
        if not 0 <= self.alpha <= 1:
            problems.append("alpha must be in [0, 1]")
        if self.temperature <= 0:
            problems.append("temperature must be > 0")
        if problems:
            raise TrainConfigError("; ".join(problems) + "; see help(aigc_lab.train.finetune)")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (the ``config`` of ``run.start`` and of every checkpoint)."""
        out = dataclasses.asdict(self)
        out["lr"] = self.learning_rate
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_kwargs(cls, method: str, hparams: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(hparams) - names)
        if unknown:
            raise TrainConfigError(f"unknown hyper-parameter(s) {', '.join(unknown)}; "
                                   f"known: {', '.join(sorted(names))}")
        values = dict(hparams)
        if values.get("output_dir") is not None:
            values["output_dir"] = os.fspath(values["output_dir"])
        for key in ("betas", "lora_targets"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(method=method, **values).validate()
