"""``compare(handles, prompts)``: the same prompts through each model, speed and quality side by side.

A row can also be a ``Variant``: a model with generation settings of its own (``draft=`` for speculative
decoding, ``cpu_kernel=False``...) and a label, so a model and its speculative use share one table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from .. import runs
from ..bus import EventBus
from ..bus import bus as default_bus
from ..errors import BenchmarkError
from ..events import RunEnd, RunMetrics, RunStart
from .quality import greedy_agreement, text_perplexity


class Variant:
    """A ``compare`` row: ``handle`` generating with ``params`` (e.g. ``draft=small``), shown as ``label``."""

    def __init__(self, handle: Any, label: str | None = None, **params: Any) -> None:
        self.handle, self.params = handle, params
        draft = params.get("draft")
        self.label = label or (handle.name if draft is None else
                               f"{handle.name} + draft {draft if isinstance(draft, str) else draft.name}")


def _variant(row: Any) -> Variant:
    return row if isinstance(row, Variant) else Variant(row)


def compare(handles: Sequence[Any], prompts: Sequence[str], *, max_new_tokens: int = 32,
            ppl_texts: Sequence[str] | None = None, rounds: int = 1, event_bus: EventBus | None = None):
    """One row per model: TTFT and tokens/s medians, perplexity on ``ppl_texts``, greedy agreement with the first.

    The first handle is the reference (usually the full-precision model). Generation is greedy so the
    agreement column measures what quantization or fine-tuning changed. Returns a pandas DataFrame.
    """
    import pandas as pd

    from ..infer import generate

    if not handles or not prompts:
        raise BenchmarkError("compare needs at least one model and one prompt")
    variants = [_variant(h) for h in handles]
    handles = [v.handle for v in variants]
    bus = event_bus or default_bus
    run = runs.new_run_id("bench")
    bus.publish(RunStart(run=run, kind="bench", model=handles[0].info(),
                         config={"models": [v.label + (f" ({v.handle.quant})" if v.handle.quant else "")
                                            for v in variants],
                                 "prompts": len(prompts), "max_new_tokens": max_new_tokens},
                         t0=time.time() * 1000.0))
    rows, reference_ids = [], None
    status = "ok"
    try:
        for variant in variants:
            handle = variant.handle
            ttft, rate, outputs, accepted = [], [], [], []
            for _ in range(rounds):
                for prompt in prompts:
                    stream = generate(handle, prompt, max_new_tokens=max_new_tokens, event_bus=bus,
                                      **variant.params)
                    m = stream.metrics
                    ttft.append(m.ttft_ms)
                    if m.tok_s:
                        rate.append(m.tok_s)
                    if m.draft_acceptance is not None:
                        accepted.append(m.draft_acceptance)
                    outputs.append([t.id for t in stream.tokens])
            if reference_ids is None:
                reference_ids = outputs
            agreement = statistics.mean(greedy_agreement(r, c) for r, c in zip(reference_ids, outputs, strict=True))
            info = handle.info()
            row = {"model": variant.label, "quant": info.quant or "-", "dtype": info.dtype, "device": info.device,
                   "params": handle.params, "ttft_ms": statistics.median(ttft),
                   "tok_s": statistics.median(rate) if rate else None, "greedy_agreement": agreement}
            if accepted:
                row["draft_acceptance"] = statistics.median(accepted)
            if ppl_texts:
                row["ppl"] = text_perplexity(handle, ppl_texts)
            rows.append(row)
    except BaseException:
        status = "cancelled"
        raise
    finally:
        bus.publish(RunEnd(run=run, status=status, metrics=RunMetrics(tokens=0)))
    table = pd.DataFrame(rows)
    if ppl_texts:
        table["ppl_change_pct"] = (table["ppl"] / table["ppl"].iloc[0] - 1.0) * 100.0
    if table["tok_s"].notna().all():
        table["speedup"] = table["tok_s"] / table["tok_s"].iloc[0]
    return table
