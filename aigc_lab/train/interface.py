"""``FinetuneRun``: what every fine-tuning run offers, one process (``TrainRun``) or several (``DistributedRun``).

Code that follows a run (the magics, Studio, a user's notebook) uses only these members, so it works the same
whichever launcher made the run. ``tests/test_train_interface.py`` checks both classes against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class FinetuneRun(Protocol):
    """A fine-tuning run: its id and status, control (``wait``, ``cancel``), its curve and its results."""

    run: str

    @property
    def status(self) -> str:
        """``pending``, ``running``, ``ok``, ``cancelled`` or ``error``."""

    @property
    def done(self) -> bool:
        """Whether the run has ended."""

    def wait(self, timeout: float | None = None) -> FinetuneRun:
        """Block until the run ends (or ``timeout`` s); raise a failed run's error; return the run."""

    def cancel(self) -> None:
        """Ask the run to stop after the current step (a checkpoint is written)."""

    @property
    def step(self) -> int:
        """Optimizer steps taken so far."""

    @property
    def steps(self) -> list[dict[str, Any]]:
        """One dict per step: step, epoch, loss, lr, tok_s."""

    @property
    def losses(self) -> list[float]:
        """The training loss of every step, in order."""

    @property
    def evals(self) -> list[dict[str, Any]]:
        """One dict per evaluation: step, val_loss, ppl and the generative metrics."""

    @property
    def best(self) -> dict[str, Any] | None:
        """The evaluation with the lowest validation loss."""

    @property
    def history(self) -> Any:
        """Steps joined with evaluations, one row per step (a pandas DataFrame)."""

    @property
    def checkpoints(self) -> list[Path]:
        """Checkpoints written, oldest first (pruned ones may no longer exist)."""

    @property
    def last_checkpoint(self) -> Path | None:
        """The newest checkpoint still on disk."""

    @property
    def model(self) -> Any:
        """The trained model as a ``ModelHandle``."""
