"""Opt-in compiled decoding: ``compile_model(handle)`` returns a handle whose forward runs under ``torch.compile``.

Compiling costs tens of seconds on a small CPU, so it is never on by default. The cost is paid once,
here, by a warm-up that traces prefill and decode with dynamic shapes (so later prompts of other
lengths reuse the graphs), and it is reported as ``handle.compile_s``.

On a CPU where the engine's kernel is built, the default path is the faster one: it runs each GPT-2 or
Llama-family decode step as one C++ call on the kernel's products, where a compiled graph still runs the
products on torch's own matrix-vector path (``benchmarks/decode.py`` reports ``compiled_vs_eager_tiny``;
figures in benchmarks/RESULTS.md). A compiled handle decodes through torch's layers, not the kernel.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import CompileError


def compile_model(handle: Any, *, warmup_tokens: int = 4, mode: str | None = None) -> Any:
    """A new handle running ``torch.compile(model, dynamic=True)``; compile time in ``.compile_s``."""
    import torch

    from ..models import ModelHandle
    from .engine import generate

    if getattr(handle, "compile_s", None) is not None:
        return handle
    compiled = torch.compile(handle.model, dynamic=True, mode=mode)
    new = ModelHandle(model=compiled, tokenizer=handle.tokenizer, name=handle.name, kind=handle.kind,
                      quant=handle.quant)
    t = time.perf_counter()
    try:
        for prompt in ("warm up the compiler", "and a second, somewhat longer prompt to mark lengths dynamic"):
            generate(new, prompt, max_new_tokens=warmup_tokens, ignore_eos=True, event_bus=_quiet_bus()).wait()
    except Exception as exc:  # noqa: BLE001 - inductor failures come in many types
        raise CompileError(f"torch.compile failed for {handle.name!r} ({type(exc).__name__}: {exc}); "
                           "use the eager model (it is unchanged)") from exc
    new.compile_s = time.perf_counter() - t
    return new


def _quiet_bus() -> Any:
    from ..bus import EventBus

    return EventBus()  # warm-up runs are not user runs: keep them out of the panel and history
