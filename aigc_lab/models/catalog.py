"""``catalog()``: the models this library knows offline, with their size and the memory they need here.

One row per model: name, kind, exact parameter count (meta-device instantiation), memory to load in
fp32 / bf16 / int8, to fine-tune fully (fp32 and bf16 mixed precision) and with LoRA (bf16 frozen weights),
and whether it fits in the free memory of the device ``load()`` would use, in the dtype it would load
(``models/devices.py``). A pandas DataFrame: it renders as a table in a notebook.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import memory
from .devices import AUTO, load_dtype, resolve_device
from .known import KNOWN_CONFIGS
from .resolve import resolve_config
from .starter import starter_names


def _mb(value: int | None) -> float:
    return float("nan") if value is None else round(value / memory.MB, 1)


def catalog(names: Iterable[str] | None = None, *, include_defaults: bool = True, batch_size: int = 4,
            seq_len: int = 512, device: Any = AUTO, dtype: Any = None) -> Any:  # -> pandas.DataFrame
    """A table of models with their parameters and memory needs, and whether each fits here.

    ``names``: extra names to add (hub ids in the local cache, local folders, starters, catalog names);
    with ``include_defaults=False`` only those. Fine-tuning figures assume ``batch_size`` x ``seq_len``
    tokens per step. ``fits`` compares loading with the free memory of ``device`` in ``dtype`` exactly as
    ``load(name, device=device, dtype=dtype)`` would place it (defaults: ``"auto"``, the saved dtype; the
    ``dtype`` column says which); ``finetune_fits`` names the best method that fits there.
    """
    import pandas as pd

    device = resolve_device(device)
    free = memory.available_memory(device)
    rows = []
    wanted = [*(list(KNOWN_CONFIGS) + starter_names() if include_defaults else []), *(names or [])]
    for name in dict.fromkeys(wanted):
        here = load_dtype(resolve_config(name)[0], dtype)
        est = {dt: memory.estimate_memory(name, dt, batch_size=batch_size, seq_len=seq_len)
               for dt in dict.fromkeys(("float32", "bfloat16", "int8", here))}
        f32, b16, i8, chosen = est["float32"], est["bfloat16"], est["int8"], est[here]
        if chosen.full_finetune_bytes is not None and chosen.full_finetune_bytes <= free:
            finetune = "full"
        elif chosen.lora_bytes is not None and chosen.lora_bytes <= free:
            finetune = "lora"
        else:
            finetune = "no"
        rows.append({
            "name": name, "kind": f32.kind, "params": f32.params, "dtype": here,
            "load_fp32_mb": _mb(f32.load_bytes), "load_bf16_mb": _mb(b16.load_bytes),
            "load_int8_mb": _mb(i8.load_bytes),
            "full_ft_fp32_mb": _mb(f32.full_finetune_bytes), "full_ft_bf16_mb": _mb(b16.full_finetune_bytes),
            "lora_bf16_mb": _mb(b16.lora_bytes),
            "fits": chosen.load_bytes <= free, "finetune_fits": finetune,
        })
    df = pd.DataFrame(rows)
    df.attrs.update({"device": device, "free_mb": round(free / memory.MB, 1), "batch_size": batch_size,
                     "seq_len": seq_len, "fits_dtype": "saved" if dtype is None else str(dtype)})
    return df
