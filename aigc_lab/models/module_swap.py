"""Replace a model's submodules by others (the twin's kernel layers, fused activations): module swaps, not
patched ``forward`` s, so every module stays an ordinary ``nn.Module`` whose class says what it runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def replace_modules(model: Any, replacement: Callable[[Any], Any | None]) -> int:
    """Put ``replacement(module)`` in place of every submodule for which it is not None; returns how many.

    Children are replaced where they hang (``setattr`` on the parent, which also covers ``ModuleList``
    entries), so a module shared by two parents (tied heads) is replaced in both by the same new one."""
    done: dict[int, Any] = {}
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) not in done:
                done[id(child)] = replacement(child)
                count += done[id(child)] is not None
            new = done[id(child)]
            if new is not None:
                setattr(parent, name, new)
    return count
