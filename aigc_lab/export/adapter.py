"""Target ``adapter``: a LoRA run's adapters alone, in peft's format (``adapter_config.json`` + safetensors).

Small, and loads onto the same base with ``PeftModel.from_pretrained(base, path)`` or vLLM's ``--lora-modules``.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import write_folder
from ..errors import ExportError
from .result import ExportResult
from .source import ExportSource

OPTIONS: tuple[str, ...] = ()


def export_adapter(source: ExportSource, path: Path) -> ExportResult:
    """Write the adapters of ``source`` (a LoRA ``TrainRun``, or a handle holding a ``PeftModel``) to ``path``."""
    run = source.train_run
    if run is not None and run.config.method == "lora":
        write_folder(path, run.save_adapter)
    elif source.peft_model is not None:
        write_folder(path, lambda tmp: source.peft_model.save_pretrained(tmp, safe_serialization=True))
    else:
        raise ExportError("target='adapter' needs a LoRA model: pass the TrainRun of a method='lora' fine-tune (or "
                          "a handle whose model is a PeftModel); for a full model use target='hf'")
    return ExportResult("adapter", path, (path,), None, {"base": source.handle.name})
