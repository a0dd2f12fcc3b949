"""Export to the tools people serve with, one module per target; each is checked by the real tool in the tests.

    al.export(run.model, "gguf", "model.gguf", quant="q8_0")   # llama.cpp / Ollama (Modelfile beside it)
    al.export(run, "hf", "merged/", dtype="bfloat16")          # vLLM / TGI / transformers (LoRA merged)
    al.export(run, "adapter", "adapter/")                      # the peft adapter alone

What can be exported is checked before anything is written (an ``ExportError`` says why not), and every
file or folder is written under a temporary name and renamed, so nothing half-written is left.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

from ..errors import ExportError
from . import adapter, gguf, hf
from .result import ExportResult
from .source import ExportSource, resolve

TARGETS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "gguf": (gguf.export_gguf, gguf.OPTIONS),
    "hf": (hf.export_hf, hf.OPTIONS),
    "adapter": (adapter.export_adapter, adapter.OPTIONS),
}


def export(model: Any, target: str, path: str | os.PathLike[str], **options: Any) -> ExportResult:
    """Export ``model`` (a ``ModelHandle``, a finished ``TrainRun`` or a model name) as ``target`` at ``path``.

    Targets and options: ``gguf`` (``quant``: f32, f16 (default), bf16, q8_0, q4_0, or a K-quant such as q4_k_m
    through llama.cpp's quantizer when llama-cpp-python is installed; ``modelfile=True`` writes an
    Ollama Modelfile beside it; ``system``: its system prompt; ``ollama_name``; ``progress``), ``hf``
    (``dtype``: float32, float16, bfloat16; default the model's) and ``adapter`` (a LoRA run's adapters).
    Returns an ``ExportResult`` with the files written and the command that serves them.
    """
    if target not in TARGETS:
        raise ExportError(f"unknown export target {target!r}; choose one of {', '.join(TARGETS)}")
    write, allowed = TARGETS[target]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ExportError(f"target {target!r} takes no option {', '.join(unknown)}; its options: "
                          f"{', '.join(allowed) or 'none'}")
    return write(resolve(model), Path(path), **options)


class _ExportModule(types.ModuleType):
    """``aigc_lab.export`` is both this package and the function: importing the package binds it as the parent's
    ``export`` attribute, so the package itself is made callable and ``al.export(...)`` works however it was
    imported."""

    def __call__(self, model: Any, target: str, path: str | os.PathLike[str], **options: Any) -> ExportResult:
        return export(model, target, path, **options)


sys.modules[__name__].__class__ = _ExportModule

__all__ = ["ExportError", "ExportResult", "ExportSource", "TARGETS", "export", "resolve"]
