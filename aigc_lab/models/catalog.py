"""``catalog()``: the models this library knows offline, with their size and the memory they need here.

One row per model: name, kind, exact parameter count (meta-device instantiation), memory to load in
fp32 / bf16 / int8, to fine-tune fully (fp32 and bf16 mixed precision) and with LoRA (bf16 frozen weights),
and whether it fits in this machine's free memory. A pandas DataFrame: it renders as a table in a notebook.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import memory
from .known import KNOWN_CONFIGS
from .starter import starter_names


def _mb(value: int | None) -> float:
    return float("nan") if value is None else round(value / memory.MB, 1)


def catalog(names: Iterable[str] | None = None, *, include_defaults: bool = True, batch_size: int = 4,
            seq_len: int = 512, device: Any = None) -> Any:  # -> pandas.DataFrame
    """A table of models with their parameters and memory needs, and whether each fits here.

    ``names``: extra names to add (hub ids in the local cache, local folders, starters, catalog names);
    with ``include_defaults=False`` only those. Fine-tuning figures assume ``batch_size`` x ``seq_len``
    tokens per step. ``fits`` compares loading (at fp32 on CPU, bf16 on CUDA) with the free memory of
    ``device`` (default: CUDA when available, else CPU); ``finetune_fits`` names the best method that fits.
    """
    import pandas as pd

    device = device or memory.default_device()
    free = memory.available_memory(device)
    default_dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
    rows = []
    wanted = [*(list(KNOWN_CONFIGS) + starter_names() if include_defaults else []), *(names or [])]
    for name in dict.fromkeys(wanted):
        est = {dt: memory.estimate_memory(name, dt, batch_size=batch_size, seq_len=seq_len)
               for dt in ("float32", "bfloat16", "int8")}
        f32, b16, i8 = est["float32"], est["bfloat16"], est["int8"]
        full = f32 if default_dtype == "float32" else b16
        if full.full_finetune_bytes is not None and full.full_finetune_bytes <= free:
            finetune = "full"
        elif b16.lora_bytes is not None and b16.lora_bytes <= free:
            finetune = "lora"
        else:
            finetune = "no"
        rows.append({
            "name": name, "kind": f32.kind, "params": f32.params,
            "load_fp32_mb": _mb(f32.load_bytes), "load_bf16_mb": _mb(b16.load_bytes),
            "load_int8_mb": _mb(i8.load_bytes),
            "full_ft_fp32_mb": _mb(f32.full_finetune_bytes), "full_ft_bf16_mb": _mb(b16.full_finetune_bytes),
            "lora_bf16_mb": _mb(b16.lora_bytes),
            "fits": est[default_dtype].load_bytes <= free, "finetune_fits": finetune,
        })
    df = pd.DataFrame(rows)
    df.attrs.update({"device": str(device), "free_mb": round(free / memory.MB, 1), "batch_size": batch_size,
                     "seq_len": seq_len, "fits_dtype": default_dtype})
    return df
