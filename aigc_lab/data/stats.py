"""Token-length statistics: a table (count, mean, p50, p95, max, truncation rate, total) and a histogram.

The truncation rate at ``max_length`` says how much training text a model would never see, before
any training starts. The plot is a plain ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot
state, nothing shown, nothing written).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ..progress import progress_bar

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .dataset import Dataset

_BATCH = 1000
_PROGRESS_ROWS = 5000


def _encoder(tokenizer: Any) -> Callable[[list[str]], list[int]]:
    """A function from a batch of texts to their token counts, for the tokenizer kinds we meet."""
    if not callable(tokenizer) and hasattr(tokenizer, "tokenizer") and hasattr(tokenizer, "model"):
        tokenizer = tokenizer.tokenizer  # a model handle
    if hasattr(tokenizer, "encode_batch") and not hasattr(tokenizer, "batch_encode_plus"):  # tokenizers.Tokenizer
        return lambda batch: [len(e.ids) for e in tokenizer.encode_batch(batch)]
    if hasattr(tokenizer, "batch_encode_plus") or hasattr(tokenizer, "model_input_names"):  # transformers
        def hf(batch: list[str]) -> list[int]:
            return [len(ids) for ids in tokenizer(batch, verbose=False)["input_ids"]]
        return hf
    if callable(tokenizer):
        return lambda batch: [len(tokenizer(t)) for t in batch]
    raise DataError(f"cannot count tokens with a {type(tokenizer).__name__}: give a Hugging Face tokenizer, "
                    "a tokenizers.Tokenizer, a model handle, or a function text -> list of tokens")


def count_tokens(tokenizer: Any, texts: Sequence[str], *, progress: bool | None = None) -> list[int]:
    """Number of tokens of each text (special tokens included, as the model would see them)."""
    encode = _encoder(tokenizer)
    texts = list(texts)
    starts = range(0, len(texts), _BATCH)
    if progress is None:
        progress = len(texts) >= _PROGRESS_ROWS
    if progress:
        starts = progress_bar(starts, desc="tokenizing", unit="batch")
    out: list[int] = []
    for s in starts:
        out.extend(encode(texts[s:s + _BATCH]))
    return out


@dataclass
class TokenStats:
    """Token lengths per field (``text``, or ``input``/``target``) with the ``max_length`` each is cut at."""

    lengths: dict[str, np.ndarray]
    max_lengths: dict[str, int]
    table: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        rows = {}
        for name, n in self.lengths.items():
            limit = self.max_lengths[name]
            rows[name] = {
                "count": int(n.size), "mean": float(n.mean()) if n.size else 0.0,
                "p50": float(np.percentile(n, 50)) if n.size else 0.0,
                "p95": float(np.percentile(n, 95)) if n.size else 0.0,
                "max": int(n.max()) if n.size else 0, "max_length": limit,
                "truncated": int((n > limit).sum()),
                "truncation_rate": float((n > limit).mean()) if n.size else 0.0,
                "tokens_total": int(n.sum()),
            }
        self.table = pd.DataFrame.from_dict(rows, orient="index")

    @property
    def truncation_rate(self) -> float:
        """Share of rows cut by ``max_length`` in the first field (text, or input)."""
        return float(self.table["truncation_rate"].iloc[0])

    def plot(self, bins: int = 40) -> Figure:
        """Histogram of token lengths per field, with a line at ``max_length`` and the truncation rate."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5 * len(self.lengths), 3.2), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(self.lengths), squeeze=False)[0]
        for ax, (name, n) in zip(axes, self.lengths.items(), strict=True):
            limit = self.max_lengths[name]
            ax.hist(n, bins=bins, color="#4c72b0")
            ax.axvline(limit, color="#c44e52", linestyle="--",
                       label=f"max_length={limit} ({self.table.loc[name, 'truncation_rate']:.1%} truncated)")
            ax.set_xlabel(f"{name} length (tokens)")
            ax.set_ylabel("rows")
            ax.legend(loc="upper right", fontsize="small")
        return fig

    def _repr_html_(self) -> str:
        return self.table.to_html(float_format=lambda x: f"{x:.3g}")

    def __repr__(self) -> str:
        return f"TokenStats\n{self.table.to_string()}"


def token_stats(ds: Dataset, tokenizer: Any, max_length: int = 512, *, template: str | None = None,
                max_target_length: int | None = None) -> TokenStats:
    """Token lengths of the text (or of input and target, for pairs; or of ``template`` texts)."""
    if max_length < 1:
        raise DataError(f"max_length must be a positive number of tokens, not {max_length!r}")
    roles, df = ds.roles, ds._df
    if template is not None:
        texts = ds.template(template)
        fields = {"text": [t if isinstance(t, str) else t[0] for t in texts]}
    elif "text" in roles:
        fields = {"text": df[roles["text"]].tolist()}
    elif ds.kind == "chat":  # the turns' text, without template markers (those depend on the model)
        fields = {"conversation": ds.combined_text().tolist()}
    else:
        fields = {"input": df[ds.prompt_column()].tolist(), "target": df[roles["target"]].tolist()}
    lengths = {name: np.asarray(count_tokens(tokenizer, t), dtype=np.int64) for name, t in fields.items()}
    limits = {name: (max_target_length or max_length) if name == "target" else max_length for name in fields}
    stats = TokenStats(lengths, limits)
    ds._emit("token_stats", len(ds), len(ds), 0, max_length=max_length,
             truncation_rate={k: float(v) for k, v in stats.table["truncation_rate"].items()},
             tokens_total=int(stats.table["tokens_total"].sum()))
    return stats
