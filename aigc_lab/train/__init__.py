"""Fine-tuning with live telemetry: full, LoRA and distillation; atomic checkpoints, resume, cancel.

    run = al.train.finetune(model, splits, method="lora", max_steps=300, eval_every=50)
    run.wait(); run.history; run.best; run.model.save("out")

Every step publishes ``train.step`` on the bus, every eval ``train.eval``, every checkpoint
``checkpoint``; a run starts with ``run.start`` (kind ``train``) and ends with one ``run.end``.
``finetune_distributed`` runs the same loop on several processes (DDP through Accelerate).
"""

from typing import Any

from ..errors import TrainingMemoryError
from .config import TrainConfig, TrainConfigError
from .interface import FinetuneRun
from .run import TrainRun, finetune

__all__ = ["DistributedRun", "FinetuneRun", "TrainConfig", "TrainConfigError", "TrainRun", "TrainingMemoryError",
           "finetune", "finetune_distributed"]


def __getattr__(name: str) -> Any:
    """``distributed`` loads on first use: ``python -m aigc_lab.train.distributed`` (and ``accelerate launch -m``)
    must find it not yet imported, or runpy warns that it may run twice."""
    if name in ("DistributedRun", "finetune_distributed"):
        from . import distributed

        return getattr(distributed, name)
    raise AttributeError(f"module 'aigc_lab.train' has no attribute {name!r}")
