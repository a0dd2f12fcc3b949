"""Resolve a model name and load it: a local ``save_pretrained`` folder, a hub id, or ``starter:*``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelLoadError, ModelNotFoundError
from .handle import ModelHandle


def _kind_of(config) -> str:
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def _from_pretrained(source: str, name: str, *, dtype: str | None, local_only: bool) -> ModelHandle:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    config = AutoConfig.from_pretrained(source, local_files_only=local_only, trust_remote_code=False)
    kind = _kind_of(config)
    cls = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    try:
        model = cls.from_pretrained(source, local_files_only=local_only, trust_remote_code=False,
                                    use_safetensors=True, **kwargs)
    except OSError as exc:
        if "safetensors" in str(exc).lower() or "model.safetensors" in str(exc):
            raise ModelLoadError(
                f"{name!r} has no safetensors weights; pickled checkpoints (.bin/.pt) are refused because "
                "loading them can run arbitrary code. Convert it with save_pretrained(safe_serialization=True)."
            ) from exc
        raise
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, trust_remote_code=False)
    model.eval()
    return ModelHandle(model=model, tokenizer=tokenizer, name=name, kind=kind)


def load(name: str, *, dtype: str | None = None, device: str | None = None) -> ModelHandle:
    """Load ``name``: a local folder saved with ``save_pretrained``, then a hub id, then ``starter:<arch>-<size>``.

    Hub ids go through the normal Hugging Face cache; with no network and nothing cached a
    ``ModelNotFoundError`` says how to get the model and which offline alternative works.
    """
    if name.startswith("starter:"):
        from .starter import build_starter

        handle = build_starter(name)
        if dtype:
            import torch

            handle.model.to(getattr(torch, dtype))
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
        if not (folder / "config.json").exists():
            raise ModelNotFoundError(
                f"the folder {str(folder)!r} has no config.json; save a model into it with "
                "save_pretrained() (or ModelHandle.save()) first")
        handle = _from_pretrained(str(folder), name, dtype=dtype, local_only=True)
    else:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        try:
            handle = _from_pretrained(name, name, dtype=dtype, local_only=offline)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"could not load {name!r} from the Hugging Face hub or its local cache ({type(exc).__name__}). "
                "Download it where there is network (huggingface-cli download "
                f"{name}) and copy the cache, point to a folder saved with save_pretrained(), or use an offline "
                "model such as 'starter:gpt-tiny'."
            ) from exc
    if device:
        handle.model.to(device)
    return handle
