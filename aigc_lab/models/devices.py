"""Where a model runs and in which dtype it loads: the one place that decides (``device="auto"``).

``load()``, ``catalog()``, the magics and Studio all default to ``"auto"``: CUDA when torch can use a GPU,
else the CPU. A model loads in the dtype asked for or, by default, the dtype its checkpoint was saved in
(transformers' ``dtype="auto"``), so the catalog's ``fits`` column judges the same device and dtype a
``load()`` with the same arguments would use.
"""

from __future__ import annotations

from typing import Any

from ..errors import DeviceError, UnknownDtypeError

AUTO = "auto"
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "float64": 8}
_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


def cuda_available() -> bool:
    """Whether torch can use a CUDA GPU here (tests monkeypatch ``torch.cuda.is_available``)."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: Any = AUTO) -> str:
    """The device a model goes to: ``"auto"`` (or None) is ``"cuda"`` when a GPU is usable, else ``"cpu"``.

    Any other value (``"cpu"``, ``"cuda:1"``, a ``torch.device``) is checked and returned as text; a CUDA
    device without a usable GPU raises ``DeviceError`` instead of failing later inside torch.
    """
    import torch

    if device is None or device == AUTO:
        return "cuda" if cuda_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"{device!r} is not a device; use 'auto', 'cpu' or 'cuda' (or 'cuda:N')") from exc
    if parsed.type == "cuda" and not cuda_available():
        raise DeviceError(f"device={str(device)!r} but torch cannot use a CUDA GPU here (torch.cuda.is_available() "
                          "is False); use device='auto' or 'cpu'")
    return str(parsed)


def dtype_name(dtype: Any) -> str:
    """``"bfloat16"`` from ``torch.bfloat16``, ``"bfloat16"`` or ``"bf16"``; ``UnknownDtypeError`` otherwise."""
    text = str(dtype).removeprefix("torch.")
    text = _ALIASES.get(text, text)
    if text not in DTYPE_BYTES:
        raise UnknownDtypeError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_BYTES)}")
    return text


def saved_dtype(config: Any) -> str:
    """The dtype a checkpoint was saved in (``config.dtype``), float32 when it names none or an unknown one."""
    saved = getattr(config, "dtype", None)
    try:
        return dtype_name(saved) if saved else "float32"
    except UnknownDtypeError:
        return "float32"


def load_dtype(config: Any, dtype: Any = None) -> str:
    """The dtype ``load(..., dtype=dtype)`` gives this model: the one asked for, else the saved one."""
    return dtype_name(dtype) if dtype is not None else saved_dtype(config)
