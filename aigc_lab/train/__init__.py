"""Fine-tuning with live telemetry: full, LoRA and distillation; atomic checkpoints, resume, cancel.

    run = al.train.finetune(model, splits, method="lora", max_steps=300, eval_every=50)
    run.wait(); run.history; run.best; run.model.save("out")

Every step publishes ``train.step`` on the bus, every eval ``train.eval``, every checkpoint
``checkpoint``; a run starts with ``run.start`` (kind ``train``) and ends with one ``run.end``.
``finetune_distributed`` runs the same loop on several processes (DDP through Accelerate).
"""

from .config import TrainConfig, TrainConfigError
from .distributed import DistributedRun, finetune_distributed
from .memory import TrainingMemoryError
from .run import TrainRun, finetune

__all__ = ["DistributedRun", "TrainConfig", "TrainConfigError", "TrainRun", "TrainingMemoryError", "finetune",
           "finetune_distributed"]
