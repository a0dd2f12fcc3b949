"""``al.prune(handle, data)``: the pruned model (``models/prune.py``) with a measured before/after report.

The surgery lives in ``models/``; this wrapper lives in ``bench/`` because the report decodes with the engine
(``al.generate``) and scores with the project's one perplexity (``bench.quality.text_perplexity``), which the
model layer may not import. The report's figures: parameters, weight memory, decode tokens/s on the same
prompt (greedy, a fixed number of tokens), perplexity on held-out text. The documented next step is recovery
by distillation from the original: ``al.finetune(pruned, data, method="distill", teacher=handle)``.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..bus import EventBus
from ..errors import PruneError
from ..models.prune import CALIBRATION_TOKENS, HEADS_RATIO, MLP_RATIO, SEQ_LEN, PrunedModel, PrunePlan, prune_model
from ..models.prune import check as check_prune
from .quality import text_perplexity

EVAL_SHARE = 0.1  # without a split: this share of the rows (the last ones, at least one) is held out
EVAL_ROWS = 64  # held-out rows scored for perplexity
DECODE_TOKENS = 64  # tokens decoded per speed measurement
ROUNDS = 3  # speed measurements per model, interleaved between the models (the median is reported)

__all__ = ["PruneReport", "Side", "decode_rates", "prune", "weight_mb"]


@dataclass(frozen=True)
class Side:
    """One model's figures in a ``PruneReport``."""

    params: int
    memory_mb: float
    tok_s: float | None
    ppl: float | None


@dataclass(frozen=True)
class PruneReport:
    """Before / after figures of a prune, measured the same way on both models."""

    before: Side
    after: Side
    plan: PrunePlan
    eval_rows: int
    decode_tokens: int

    def table(self) -> Any:
        """A pandas DataFrame: one row per figure, columns before, after and after / before."""
        import pandas as pd

        rows = []
        for label, key in (("parameters", "params"), ("weight memory (MB)", "memory_mb"),
                           ("decode tokens/s", "tok_s"), (f"perplexity ({self.eval_rows} held-out rows)", "ppl")):
            b, a = getattr(self.before, key), getattr(self.after, key)
            rows.append({"": label, "before": b, "after": a, "after / before": a / b if a and b else None})
        return pd.DataFrame(rows).set_index("")

    def _text_table(self) -> Any:
        def cell(v: Any, digits: int) -> str:
            return "-" if v is None or v != v else f"{v:,.{digits}f}"

        table = self.table()
        out = table.astype(object)
        for i, label in enumerate(table.index):
            for col in ("before", "after"):
                out.loc[label, col] = cell(table.loc[label, col], 0 if i == 0 else 2)
            out.loc[label, "after / before"] = cell(table.loc[label, "after / before"], 3)
        return out

    def __str__(self) -> str:
        table = self._text_table()
        lines = [f"{'':<34}{'before':>14}{'after':>14}{'after/before':>14}"]
        lines += [f"{label:<34}" + "".join(f"{row[c]:>14}" for c in table.columns) for label, row in table.iterrows()]
        return "\n".join([*lines, self.plan.summary(), _NEXT])

    def _repr_html_(self) -> str:
        return (self._text_table().rename_axis(None).to_html() + f"<p>{html.escape(self.plan.summary())}</p>"
                f"<p>{html.escape(_NEXT)}</p>")


_NEXT = "Next: recover quality with al.finetune(pruned, data, method='distill', teacher=original)"


def weight_mb(model: Any) -> float:
    """Memory held by a model's parameters and buffers, in MB (tied weights counted once)."""
    seen, total = set(), 0
    for t in (*model.parameters(), *model.buffers()):
        key = (t.device, t.data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total / 2**20


def _row_texts(data: Any) -> list[str]:
    from ..data import Dataset

    if isinstance(data, Dataset):
        return [t for t in data.combined_text().tolist() if t]
    if isinstance(data, (list, tuple)) and data:
        if all(isinstance(x, str) for x in data):
            return list(data)
        if all(isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(s, str) for s in x) for x in data):
            return [f"{a}\n{b}" for a, b in data]
    raise PruneError("calibration data must be a Dataset, Splits, a non-empty list of strings or of (input, target) "
                     "string pairs: the text the pruned model will be used on")


def calibration_and_held_out(data: Any) -> tuple[list[str], list[str]]:
    """Calibration rows and held-out rows of ``data``: a ``Splits`` gives train and val (else test); anything
    else keeps its last ``EVAL_SHARE`` of rows (at least one) out of calibration."""
    from ..data import Splits

    if isinstance(data, Splits):
        held = data.val if len(data.val) else data.test
        return _row_texts(data.train), _row_texts(held)[:EVAL_ROWS] if len(held) else []
    rows = _row_texts(data)
    n_held = max(1, int(len(rows) * EVAL_SHARE)) if len(rows) > 1 else 0
    return rows[:len(rows) - n_held], rows[len(rows) - n_held:][:EVAL_ROWS]


def decode_rates(handles: Sequence[Any], prompt: str, tokens: int) -> list[float | None]:
    """Median greedy decode tokens/s of each handle on ``prompt``, the rounds interleaved (A B A B ...) so a machine
    whose load changes mid-measurement slows every model alike; one short warm-up each first."""
    from ..infer import generate

    bus = EventBus()  # measurement runs stay off the panel
    for handle in handles:
        generate(handle, prompt, max_new_tokens=4, ignore_eos=True, event_bus=bus).wait()
    rates: list[list[float]] = [[] for _ in handles]
    for _ in range(ROUNDS):
        for i, handle in enumerate(handles):
            rate = generate(handle, prompt, max_new_tokens=tokens, ignore_eos=True, event_bus=bus).metrics.tok_s
            if rate:
                rates[i].append(rate)
    return [statistics.median(r) if r else None for r in rates]


def _side(handle: Any, held_out: Sequence[str], tok_s: float | None) -> Side:
    return Side(params=handle.params, memory_mb=weight_mb(handle.model), tok_s=tok_s,
                ppl=text_perplexity(handle, held_out, max_length=SEQ_LEN))


def prune(handle: Any, data: Any, *, drop_blocks: int | None = None, keep_blocks: Sequence[int] | None = None,
          mlp_ratio: float = MLP_RATIO, heads_ratio: float = HEADS_RATIO,
          calibration_tokens: int = CALIBRATION_TOKENS,
          eval_texts: Sequence[str] | None = None, prompt: str | None = None, decode_tokens: int = DECODE_TOKENS,
          report: bool = True) -> PrunedModel:
    """A smaller dense copy of ``handle`` (GPT-2 or the Llama family; the original is untouched), saved and reloaded
    by plain ``transformers``.

    ``drop_blocks``: how many whole blocks to remove, the least influential on ``data`` first (default: a quarter,
    rounded down), or ``keep_blocks``: exactly which to keep. ``mlp_ratio`` / ``heads_ratio``: the share of every
    block's MLP neurons / key-value head groups kept (Llama family only for heads), the most important per block.
    Calibration reads the first ``calibration_tokens`` tokens of ``data`` (a ``Dataset``, ``Splits`` - its train
    part - or a list of strings). With ``report`` (default) the result's ``.report`` holds before / after
    parameters, weight memory, decode tokens/s on ``prompt`` (``decode_tokens`` greedy tokens) and perplexity on
    ``eval_texts`` (default: the split's val rows, else rows of ``data`` kept out of calibration). Then recover with
    ``al.finetune(pruned, data, method="distill", teacher=handle)``.
    """
    check_prune(handle, drop_blocks=drop_blocks, keep_blocks=keep_blocks, mlp_ratio=mlp_ratio, heads_ratio=heads_ratio,
          calibration_tokens=calibration_tokens)
    if isinstance(decode_tokens, bool) or not isinstance(decode_tokens, int) or decode_tokens < 2:
        raise PruneError(f"decode_tokens must be a whole number of at least 2, not {decode_tokens!r}")
    calibration, held_out = calibration_and_held_out(data)
    if eval_texts is not None:
        held_out = [t for t in eval_texts if t]
    if report and not held_out:
        raise PruneError("no held-out text to measure perplexity on: pass Splits (its val rows are used), "
                         "eval_texts=[...], or report=False")
    pruned = prune_model(handle, calibration, drop_blocks=drop_blocks, keep_blocks=keep_blocks, mlp_ratio=mlp_ratio,
                         heads_ratio=heads_ratio, calibration_tokens=calibration_tokens)
    if report:
        prompt = prompt if prompt is not None else held_out[0][:200]
        before, after = decode_rates([handle, pruned], prompt, decode_tokens)
        pruned.report = PruneReport(before=_side(handle, held_out, before), after=_side(pruned, held_out, after),
                                    plan=pruned.plan, eval_rows=len(held_out), decode_tokens=decode_tokens)
    return pruned
