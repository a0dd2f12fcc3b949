"""Target ``hf``: a merged Hugging Face folder that vLLM, TGI and ``transformers`` load as it is.

Safetensors weights (LoRA merged in) in the chosen dtype, ``config.json``, the tokenizer with its chat
template, and a ``generation_config.json`` whose ``eos_token_id`` lists every id the model stops on (vLLM and
``transformers.generate`` read the list from there). Written to a temp folder, then renamed.
"""

from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import Any

from ..atomic import write_folder
from ..errors import ExportError
from .result import ExportResult
from .source import ExportSource

DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
OPTIONS: tuple[str, ...] = ("dtype",)


def _model_in(model: Any, dtype: str | None) -> Any:
    """``model`` itself when it already has ``dtype`` (or none was asked), else a converted copy."""
    import torch

    if dtype is None or next(model.parameters()).dtype == getattr(torch, dtype):
        return model
    return copy.deepcopy(model).to(getattr(torch, dtype))


def _generation_config(model: Any, eos_ids: list[int]) -> Any:
    from transformers import GenerationConfig

    gen = copy.deepcopy(getattr(model, "generation_config", None)) or GenerationConfig.from_model_config(model.config)
    if eos_ids:
        gen.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    return gen


def serve_commands(path: Path, dtype: str) -> dict[str, str]:
    """How to serve the folder with vLLM and TGI."""
    p = shlex.quote(str(path))
    return {"vllm": f"vllm serve {p} --dtype {dtype}",
            "tgi": f"text-generation-launcher --model-id {p} --dtype {dtype}"}


def export_hf(source: ExportSource, path: Path, *, dtype: str | None = None) -> ExportResult:
    """Write the merged folder at ``path``; ``dtype`` (float32 / float16 / bfloat16) defaults to the model's own."""
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"dtype={dtype!r}: choose one of {', '.join(DTYPES)}")
    model = _model_in(source.model, dtype)
    saved = str(next(model.parameters()).dtype).removeprefix("torch.")
    gen = _generation_config(model, source.eos_ids)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        gen.save_pretrained(tmp)
        source.tokenizer.save_pretrained(tmp)

    write_folder(path, write)
    commands = serve_commands(path, saved) if source.handle.kind in ("causal", "seq2seq") else {}
    details = {"dtype": saved, "eos_ids": source.eos_ids, "chat_template": source.chat_template is not None,
               "commands": commands}
    return ExportResult("hf", path, (path,), commands.get("vllm"), details)
