"""``ModelHandle``: a loaded model with its tokenizer and the facts every event and comparison needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_folder
from ..events import ModelInfo


@dataclass
class ModelHandle:
    """A model ready to run: the torch module, its tokenizer, and what exactly it is."""

    model: Any
    tokenizer: Any
    name: str
    kind: str  # "causal" | "seq2seq" | "rnn" (the LSTM baseline: runs through the causal path)
    quant: str | None = None
    param_count: int | None = None  # set when the module no longer exposes its weights as parameters

    @property
    def params(self) -> int:
        """Parameter count (a quantized copy reports its original's: packed weights are not parameters)."""
        if self.param_count is not None:
            return self.param_count
        return sum(p.numel() for p in self.model.parameters())

    @property
    def dtype(self) -> str:
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    def info(self) -> ModelInfo:
        """The description sent with every ``run.start``."""
        return ModelInfo(name=self.name, params=self.params, dtype=self.dtype, quant=self.quant,
                         device=self.device)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save model (safetensors) and tokenizer to ``path`` atomically: a temp folder, then a rename."""
        def write(tmp: Path) -> None:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)

        return write_folder(path, write)

    def __repr__(self) -> str:
        quant = f", quant={self.quant}" if self.quant else ""
        return (f"ModelHandle({self.name!r}, {self.kind}, {self.params / 1e6:.1f}M params, "
                f"{self.dtype}{quant}, {self.device})")


def shared_copy(model: Any) -> Any:
    """A copy of ``model``'s modules whose parameters are new ``Parameter`` objects over the SAME storage.

    For copies that never write the weights (LoRA's frozen base: ``merge`` clones what it changes; the
    engine's kernel twin, ``infer/kernel_layers.py``): no second copy of the weights, and the original's modules
    and ``requires_grad`` flags stay untouched. Buffers are copied (small). Tied weights stay tied. Dynamic
    int8 layers' packed weights (not parameters: objects holding the int8 matrix) are shared as they are.
    """
    import copy

    import torch
    from torch.ao.nn.quantized.modules.linear import LinearPackedParams

    memo: dict[int, Any] = {id(m): m for m in model.modules() if isinstance(m, LinearPackedParams)}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(p.data, requires_grad=p.requires_grad)
    return copy.deepcopy(model, memo)
