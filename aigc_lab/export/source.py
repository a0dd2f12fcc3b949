"""What an export starts from: a plain ``transformers`` model (LoRA merged in), its tokenizer, eos ids, chat template.

Every target takes one ``ExportSource``, so the rules live in one place: a LoRA model is merged on a copy
(the caller's model keeps its adapters), a quantized handle is refused (its weights are packed, not
parameters), and the end-of-sequence ids are the tokenizer's eos followed by ``generation_config``'s list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError


@dataclass
class ExportSource:
    """A model ready to be written: ``handle.model`` is a plain ``transformers`` model with no adapters."""

    handle: Any  # ModelHandle
    peft_model: Any = None  # the PeftModel the handle came from (LoRA), for the "adapter" target
    train_run: Any = None  # the TrainRun it came from, when one was given

    @property
    def model(self) -> Any:
        return self.handle.model

    @property
    def tokenizer(self) -> Any:
        return self.handle.tokenizer

    @property
    def config(self) -> Any:
        return self.handle.model.config

    @property
    def eos_ids(self) -> list[int]:
        """The tokenizer's eos first, then ``generation_config.eos_token_id`` (an int or a list), then the config's."""
        gen = getattr(self.model, "generation_config", None)
        found: list[int] = []
        for value in (self.tokenizer.eos_token_id, getattr(gen, "eos_token_id", None),
                      getattr(self.config, "eos_token_id", None)):
            for i in value if isinstance(value, (list, tuple)) else [value]:
                if i is not None and int(i) not in found:
                    found.append(int(i))
        return found

    @property
    def chat_template(self) -> str | dict[str, str] | None:
        """The tokenizer's chat template (a string, or named templates), or None when it has none."""
        return getattr(self.tokenizer, "chat_template", None) or None

    def stop_texts(self) -> list[str]:
        """The text of every eos token (what Ollama's ``stop`` parameters need)."""
        return [self.tokenizer.convert_ids_to_tokens(i) for i in self.eos_ids]


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency, but a model without it cannot be a PeftModel either
        return False
    return isinstance(model, PeftModel)


def _merged(handle: Any) -> Any:
    """A handle over a merged copy of ``handle``'s LoRA model (the frozen base weights are shared, not copied)."""
    from ..models.handle import ModelHandle, shared_copy
    from ..train.lora import merge

    model = merge(shared_copy(handle.model))
    model.eval()
    return ModelHandle(model=model, tokenizer=handle.tokenizer, name=handle.name, kind=handle.kind)


def resolve(obj: Any) -> ExportSource:
    """Turn a ``ModelHandle``, a finished ``TrainRun`` or a model name into an ``ExportSource``."""
    from ..models import ModelHandle, load
    from ..train.run import TrainRun

    run = None
    if isinstance(obj, TrainRun):
        if not obj.done:
            raise ExportError("the training run is still going: call .wait() (or .cancel()) before exporting it")
        if obj.status == "error":
            raise ExportError(f"the training run failed ({obj.error!r}): there is no trained model to export")
        run, obj = obj, obj.model  # TrainRun.model has LoRA merged already
    elif isinstance(obj, (str, Path)):
        obj = load(str(obj))
    if not isinstance(obj, ModelHandle):
        raise ExportError(f"cannot export a {type(obj).__name__}: pass a ModelHandle (al.models.load(...)), a "
                          "finished TrainRun, or a model name")
    if obj.quant is not None:
        raise ExportError(f"this handle is quantized in torch ({obj.quant}): export the full-precision model and "
                          "choose the export's own precision instead (gguf: quant='q8_0' / 'q4_0'; hf: dtype=...)")
    if _is_peft(obj.model):
        return ExportSource(handle=_merged(obj), peft_model=obj.model, train_run=run)
    return ExportSource(handle=obj, train_run=run)
