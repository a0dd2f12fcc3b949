"""Same formula, fewer operations: swap a model's multi-op activations for torch's fused kernels.

GPT-2's ``NewGELUActivation`` (``gelu_new``) computes the tanh approximation of GELU as six tensor
operations, and autograd keeps each one's output for the backward. ``torch.nn.functional.gelu(x,
approximate="tanh")`` is the same formula in one kernel with a fused backward: equal to ~2e-7 forward
and ~1e-6 in the gradient, and faster in training and in decoding alike: one pass over the activation
where six ops each made one and autograd kept each output (figures in benchmarks/RESULTS.md).
transformers ships that op as the ``gelu_pytorch_tanh`` activation. Only the module objects passed in
change (an engine twin or a training run's copy): the config, the saved weights and the caller's model
stay as they were.
"""

from __future__ import annotations

import functools
from typing import Any

from .module_swap import replace_modules


def gelu_tanh(x: Any) -> Any:
    """``gelu_new`` as torch's single fused op."""
    import torch

    return torch.nn.functional.gelu(x, approximate="tanh")


@functools.cache
def _gelu_tanh_module() -> type:
    import torch

    class GeluTanh(torch.nn.Module):
        """``NewGELUActivation``'s formula as torch's one fused op (``gelu_tanh``)."""

        def forward(self, x: Any) -> Any:
            return gelu_tanh(x)

    return GeluTanh


def fuse_activations(model: Any) -> int:
    """Replace every ``NewGELUActivation`` of ``model`` by a ``GeluTanh`` module; returns how many were swapped."""
    from transformers.activations import NewGELUActivation

    cls = _gelu_tanh_module()
    return replace_modules(model, lambda m: cls() if type(m) is NewGELUActivation else None)
