"""Resolve a model name and load it: a local ``save_pretrained`` folder, a hub id, or ``starter:*``.

Before any weights are allocated the memory they need is estimated from the config (``memory.py``) and
compared with what is free; a model that cannot fit raises ``ModelTooLargeError``. Weights come from
safetensors; pickled checkpoints (``.bin``, ``.pt``...) can run code when loaded and are refused unless
the caller passes ``allow_pickle=True``. ``trust_remote_code`` is never turned on implicitly.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import ModelLoadError, ModelNotFoundError
from . import memory
from .devices import AUTO, dtype_name, load_dtype, resolve_device
from .handle import ModelHandle
from .resolve import folder_config, kind_of, resolve_config

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
HUB_PROBE_TIMEOUT_S = 3.0


def _auto_class(kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM


def _torch_dtype(dtype: Any) -> Any:
    import torch

    name = dtype_name(dtype)
    if name == "int8":
        raise ModelLoadError("dtype='int8' is a quantization: load the model, then use al.quantize(handle, 'int8')")
    return getattr(torch, name)


def _check_memory(config: Any, name: str, dtype: Any, device: Any) -> None:
    estimate = memory.estimate_memory(config, load_dtype(config, dtype))
    memory.check_fits(dataclasses.replace(estimate, name=name), device)


def _from_pretrained(source: str, name: str, config: Any, *, dtype: Any, device: Any, local_only: bool,
                     allow_pickle: bool, trust_remote_code: bool) -> ModelHandle:
    from transformers import AutoTokenizer

    kind = kind_of(config)
    _check_memory(config, name, dtype, device)  # before any allocation
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)} if dtype is not None else {}
    try:
        model = _auto_class(kind).from_pretrained(
            source, config=config, local_files_only=local_only, trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True, **kwargs)
    except OSError as exc:
        if "safetensors" in str(exc).lower():
            raise ModelLoadError(
                f"{name!r} has no safetensors weights; pickled checkpoints (.bin/.pt) are refused because loading "
                "them can run arbitrary code. Convert it with save_pretrained(safe_serialization=True), or pass "
                "allow_pickle=True if you trust where it came from.") from exc
        raise
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, trust_remote_code=trust_remote_code)
    model.eval()
    return ModelHandle(model=model, tokenizer=tokenizer, name=name, kind=kind)


def _load_folder(folder: Path, name: str, *, dtype: Any, device: Any, allow_pickle: bool,
                 trust_remote_code: bool) -> ModelHandle:
    config = folder_config(folder, trust_remote_code=trust_remote_code)
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if not pickled:
            raise ModelLoadError(f"the folder {str(folder)!r} has a config.json but no weights (*.safetensors)")
        if not allow_pickle:
            raise ModelLoadError(
                f"the folder {str(folder)!r} holds pickled weights ({', '.join(pickled)}) and no safetensors; "
                "pickled checkpoints are refused because loading them can run arbitrary code. Re-save the model "
                "with save_pretrained(safe_serialization=True), or pass allow_pickle=True if you trust its source.")
        warnings.warn(f"loading pickled weights from {str(folder)!r} (allow_pickle=True): only do this for files "
                      "you trust; re-save with ModelHandle.save() to get safetensors", UserWarning, stacklevel=3)
    return _from_pretrained(str(folder), name, config, dtype=dtype, device=device, local_only=True,
                            allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)


def hub_offline() -> bool:
    """Whether the user asked for no hub access (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(k, "0").lower() not in ("0", "", "false", "no", "off")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (or the HTTPS proxy) opens within ``timeout`` seconds, DNS included."""
    import socket

    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    ok = threading.Event()

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.set()
        except OSError:
            pass

    worker = threading.Thread(target=probe, name="aigc-lab-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return ok.is_set()


def _not_found(name: str, reason: str) -> ModelNotFoundError:
    from .known import canonical

    known = canonical(name)
    if known is not None:
        kind = kind_of(resolve_config(known)[0])
        alternative = {"seq2seq": "starter:t5-small", "rnn": "starter:lstm-small"}.get(kind, "starter:gpt-small")
    else:
        alternative = "starter:t5-small" if "t5" in name.lower() else "starter:gpt-tiny"
    return ModelNotFoundError(
        f"could not load {name!r}: {reason}. To get it, download it where there is network "
        f"(`hf download {name}`, or from_pretrained({name!r}).save_pretrained(folder)) and copy the Hugging Face "
        f"cache (~/.cache/huggingface) or that folder here, then load it by name or folder. Offline alternatives "
        f"that work now: al.models.load({alternative!r}) (or 'starter:gpt-tiny', 'starter:llama-tiny', "
        "'starter:t5-tiny', 'starter:lstm-tiny'), or a folder saved with save_pretrained().")


def _load_hub(name: str, *, dtype: Any, device: Any, allow_pickle: bool, trust_remote_code: bool) -> ModelHandle:
    from transformers import AutoConfig

    def attempt(local_only: bool) -> ModelHandle:
        try:
            config = AutoConfig.from_pretrained(name, local_files_only=local_only, trust_remote_code=trust_remote_code)
        except ValueError as exc:
            if "trust_remote_code" in str(exc):
                raise ModelLoadError(
                    f"{name!r} needs its own Python code to load; that is never run implicitly. Pass "
                    "trust_remote_code=True only if you have read that code.") from exc
            raise
        return _from_pretrained(name, name, config, dtype=dtype, device=device, local_only=local_only,
                                allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)

    try:
        return attempt(local_only=True)  # the local Hugging Face cache: no network needed
    except OSError as exc:
        cache_error = exc
    if hub_offline():
        raise _not_found(name, "it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set") from cache_error
    if not hub_reachable():
        raise _not_found(name, "it is not in the local Hugging Face cache and the hub cannot be reached "
                               "(no network)") from cache_error
    try:
        return attempt(local_only=False)
    except OSError as exc:
        raise _not_found(name, f"the hub did not provide it ({type(exc).__name__}: {exc})") from exc


def load(name: str | os.PathLike[str], *, dtype: Any = None, device: Any = AUTO, allow_pickle: bool = False,
         trust_remote_code: bool = False) -> ModelHandle:
    """Load ``name``: a local folder saved with ``save_pretrained``, then a hub id, then ``starter:<arch>-<size>``.

    ``dtype``: ``"float32"``, ``"bfloat16"``, ``"float16"`` (default: the saved dtype). ``device``: ``"auto"``
    (default: CUDA when torch can use a GPU, else CPU; ``models/devices.py``), ``"cpu"``, ``"cuda"``... The
    memory needed on that device is checked first: ``ModelTooLargeError`` if it cannot fit. Hub ids go
    through the normal Hugging Face cache; with no network and nothing cached a ``ModelNotFoundError`` says
    how to get the model and which offline model works instead. Pickled weights need ``allow_pickle=True``.
    """
    text = os.fspath(name)
    device = resolve_device(device)
    folder = Path(text).expanduser()
    if folder.is_dir():
        handle = _load_folder(folder, text, dtype=dtype, device=device, allow_pickle=allow_pickle,
                              trust_remote_code=trust_remote_code)
    elif text.startswith("starter:"):
        from .starter import build_starter, starter_config

        _check_memory(starter_config(text), text, "float32", device)  # largest vocabulary of the size: an upper bound
        handle = build_starter(text)
        if dtype is not None:
            handle.model.to(_torch_dtype(dtype))
    else:
        handle = _load_hub(text, dtype=dtype, device=device, allow_pickle=allow_pickle,
                           trust_remote_code=trust_remote_code)
    handle.model.to(device)
    return handle
