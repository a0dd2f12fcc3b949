"""Turn a model name (or a config) into a ``transformers`` config without loading any weights.

Used by the memory estimate and the catalog, and by ``load`` to check memory before allocating.
Order: a config object or dict; ``starter:<arch>-<size>``; a local folder with ``config.json``; an
embedded config of a well-known hub model (``known.py``); a config in the Hugging Face cache.
Nothing here touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, ModelNotFoundError
from .known import canonical, known_config

LSTM_MODEL_TYPE = "aigc-lstm"


def kind_of(config: Any) -> str:
    """``seq2seq`` (encoder-decoder), ``rnn`` (the LSTM baseline) or ``causal``."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    return "rnn" if getattr(config, "model_type", None) == LSTM_MODEL_TYPE else "causal"


def folder_config(folder: Path, *, trust_remote_code: bool = False) -> Any:
    """The config of a ``save_pretrained`` folder; clear errors for a missing file or remote code."""
    from transformers import AutoConfig

    if not (folder / "config.json").exists():
        raise ModelNotFoundError(
            f"the folder {str(folder)!r} has no config.json; save a model into it with "
            "save_pretrained() (or ModelHandle.save()) first")
    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        raise ModelLoadError(
            f"cannot read the config in {str(folder)!r}: {exc}. Models that need their own Python code are "
            "never trusted implicitly; pass trust_remote_code=True only if you have read that code.") from exc


def resolve_config(name_or_config: Any) -> tuple[Any, str]:
    """``(config, label)`` for a config object, a dict with ``model_type``, or a name (see module docstring)."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(name_or_config, PretrainedConfig):
        return name_or_config, getattr(name_or_config, "name_or_path", "") or name_or_config.model_type
    if isinstance(name_or_config, dict):
        values = dict(name_or_config)
        model_type = values.pop("model_type")
        return AutoConfig.for_model(model_type, **values), model_type
    name = os.fspath(name_or_config)
    if name.startswith("starter:"):
        from .starter import starter_config

        return starter_config(name), name
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder_config(folder), name
    config = known_config(name)
    if config is not None:
        return config, canonical(name) or name
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True, trust_remote_code=False), name
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"no config for {name!r}: it is not a local folder, a starter model, a model in the catalog, or a "
            "model in the Hugging Face cache. See al.models.catalog() for the models known offline.") from exc
