"""What the decode loop asks of a stepper, and what a generation asks of the registry (``infer/backends.py``).

A *stepper* turns token ids into next-token logits and owns everything in between: the model call, the
key/value cache (its growth included) and any kernel state. The decode loop (``infer/decode.py``) only samples,
applies stop rules and emits tokens, whichever stepper runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class DecodeRequest:
    """What a generation needs that decides how it can run: how many prompts, and the ``cpu_kernel`` wish."""

    batch: int = 1
    cpu_kernel: bool | None = None  # None: the kernel layers when they are built; True: required; False: never
    stepper: str | None = None  # a registry entry's name: that one or an error (None: the first that applies)


class Stepper(Protocol):
    """One generation's way from ids to logits. ``prefill`` once, then ``step`` once per generated token."""

    def prefill(self, ids: Any, mask: Any | None) -> Any:
        """Run the prompts (``ids`` [n, length], ``mask`` for padded batches); logits [n, vocab] of the last
        position of each."""
        ...

    def step(self, ids: list[int]) -> Any:
        """Append one token per sequence (n ids); logits [n, vocab] for the next position."""
        ...


class Rewindable(Stepper, Protocol):
    """A one-sequence stepper that speculative decoding can drive: several tokens in one forward, and back."""

    def extend(self, ids: list[int]) -> Any:
        """Append several tokens of the one sequence in one forward; logits [len(ids), vocab], one row after each."""
        ...

    def rewind(self, n: int) -> None:
        """Forget the last ``n`` tokens appended."""
        ...


def last_logits(out: Any) -> Any:
    """The last position's logits [n, vocab] of a model output."""
    return out.logits[:, -1, :]


_ACCEPTS: dict[tuple[type, str], bool] = {}


def accepts(model: Any, name: str) -> bool:
    """Whether ``model.forward`` takes the keyword ``name`` (cached per model class)."""
    key = (type(model), name)
    if key not in _ACCEPTS:
        import inspect

        _ACCEPTS[key] = name in inspect.signature(model.forward).parameters
    return _ACCEPTS[key]
