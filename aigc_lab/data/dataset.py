"""``Dataset``: a table of examples plus which columns play which role, and the report of every step.

A dataset is immutable: ``clean``, ``augment`` and ``split`` return new datasets that carry the same
pipeline id (``run``) and the report so far, so the panel can show one pipeline from load to split.
Every step appends a ``DataStep`` event to ``report`` and publishes it on the bus.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import DataError
from ..events import DataStep

if TYPE_CHECKING:
    from ..bus import EventBus
    from .stats import TokenStats

ROLE_ORDER: tuple[str, ...] = ("instruction", "input", "text", "target", "messages")
"""Roles a column can play: ``text`` alone (causal LM), ``input``/``target`` (+ optional ``instruction``), or
``messages`` alone (conversations: a list of ``{"role", "content"}`` turns per row, ``data/conversations.py``)."""

AUGMENTED = "augmented"
"""Bool column: True for rows made by ``augment`` (exclude them from evaluation)."""

SOURCE = "source_row"
"""Int column: the loaded row a row comes from; augmented copies share their source's id (leakage-free splits)."""


MAX_LISTED = 5
"""How many bad rows (or archive members) a warning or an error names; the rest are counted."""


def first_few(items: Sequence[str], sep: str = "; ") -> str:
    """The first ``MAX_LISTED`` of ``items`` joined with ``sep``, and how many more there are."""
    more = f"{sep.rstrip()} and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return sep.join(items[:MAX_LISTED]) + more


def with_provenance(df: pd.DataFrame, name: str, bad: Sequence[str], stacklevel: int) -> pd.DataFrame:
    """A loaded table's ``AUGMENTED`` (False) and ``SOURCE`` (row number) columns, filled where missing, and the
    warning that names the bad rows a load skipped (``skip_bad_rows=True``)."""
    from .loading import BadRowsWarning

    if AUGMENTED not in df.columns:
        df[AUGMENTED] = False
    df[AUGMENTED] = df[AUGMENTED].fillna(False).astype(bool)
    if SOURCE not in df.columns:
        df[SOURCE] = range(len(df))
    if bad:
        import warnings

        warnings.warn(f"{name}: skipped {len(bad)} bad row(s): {first_few(bad)}", BadRowsWarning,
                      stacklevel=stacklevel + 1)
    return df


def empty_rows(df: pd.DataFrame, roles: dict[str, str]) -> pd.Series:
    """Rows with nothing to learn from: no text, no target, or neither instruction nor input; for conversations,
    a turn without text or no assistant turn."""
    if "messages" in roles:
        from .conversations import is_usable

        return ~df[roles["messages"]].map(is_usable).astype(bool)

    def blank(role: str) -> pd.Series:
        if role not in roles:
            return pd.Series(True, index=df.index)
        col = df[roles[role]]
        return col.isna() | (col.fillna("").astype(str).str.strip() == "")

    if "text" in roles:
        return blank("text")
    return blank("target") | (blank("instruction") & blank("input"))


class Report(list):
    """The steps a dataset went through, as the ``DataStep`` events that were published."""

    def to_frame(self) -> pd.DataFrame:
        """One row per step: rows in/out, rows changed, rows removed and why."""
        rows = []
        for ev in self:
            removed = ev.detail.get("removed", {})
            rows.append({"step": ev.step, "rows_in": ev.rows_in, "rows_out": ev.rows_out, "changed": ev.changed,
                         "removed": sum(removed.values()),
                         "why": ", ".join(f"{k}: {v}" for k, v in removed.items() if v)})
        return pd.DataFrame(rows, columns=["step", "rows_in", "rows_out", "changed", "removed", "why"])

    def _repr_html_(self) -> str:
        return self.to_frame().to_html(index=False)


class Dataset:
    """Examples in a DataFrame (``df``), the role of each text column (``roles``), and the step ``report``.

    Build one with ``aigc_lab.data.load``. Text-only datasets have the role ``text`` (causal LM training);
    pair datasets have ``input`` and ``target`` (and optionally ``instruction``) for seq2seq or
    instruction tuning.
    """

    def __init__(self, df: pd.DataFrame, roles: dict[str, str], *, run: str, name: str = "<data>",
                 report: Sequence[DataStep] = (), event_bus: EventBus | None = None) -> None:
        self._df = df.reset_index(drop=True)
        self._roles = {r: roles[r] for r in ROLE_ORDER if roles.get(r)}
        self._run = run
        self._name = name
        self._report = Report(report)
        self._bus = event_bus

    # -- what it is -----------------------------------------------------------------------------

    @property
    def df(self) -> pd.DataFrame:
        """The rows (a copy-on-write view: changing it does not change the dataset)."""
        return self._df.copy(deep=False)

    @property
    def roles(self) -> dict[str, str]:
        """Role -> column name, e.g. ``{"text": "body"}`` or ``{"input": "question", "target": "answer"}``."""
        return dict(self._roles)

    @property
    def kind(self) -> str:
        """``"text"`` (one text per row), ``"pairs"`` (input/target) or ``"chat"`` (conversations)."""
        if "messages" in self._roles:
            return "chat"
        return "text" if "text" in self._roles else "pairs"

    @property
    def run(self) -> str:
        """The pipeline id shared by every ``DataStep`` of this dataset and the datasets derived from it."""
        return self._run

    @property
    def name(self) -> str:
        """Where the data came from (the file name as given, or ``<DataFrame>``)."""
        return self._name

    @property
    def report(self) -> Report:
        """Every step so far (load, clean steps, augment, split...), oldest first."""
        return Report(self._report)

    def __len__(self) -> int:
        return len(self._df)

    def __repr__(self) -> str:
        roles = ", ".join(f"{r}={c!r}" for r, c in self._roles.items())
        n_aug = int(self._df[AUGMENTED].sum()) if AUGMENTED in self._df else 0
        aug = f", {n_aug} augmented" if n_aug else ""
        return f"Dataset({len(self)} rows{aug}, {roles}, from {self._name}, run={self._run!r})"

    def column(self, role: str) -> pd.Series:
        """The column playing ``role`` (``text``, ``input``, ``target`` or ``instruction``)."""
        if role not in self._roles:
            raise DataError(f"this dataset has no {role!r} column; its roles are {self._roles}")
        return self._df[self._roles[role]]

    def combined_text(self) -> pd.Series:
        """All role columns of a row joined with newlines: what length and symbol filters look at."""
        if self.kind == "chat":
            from .conversations import conversation_text

            return self._df[self._roles["messages"]].map(conversation_text)
        cols = [self._df[c] for c in self._roles.values()]
        out = cols[0]
        for c in cols[1:]:
            out = out + "\n" + c
        return out

    def conversations(self) -> list[list[dict[str, str]]]:
        """Conversations as lists of ``{"role", "content"}`` turns (what ``apply_chat_template`` takes)."""
        if self.kind != "chat":
            raise DataError("this dataset holds no conversations; load a file with a 'messages' or 'conversations' "
                            "column (or format='sharegpt' / 'alpaca')")
        return [[dict(t) for t in conv] for conv in self._df[self._roles["messages"]]]

    def prompt_column(self) -> str:
        """The column a model is prompted with: instruction, else input, else text."""
        if self.kind == "chat":
            raise DataError("a conversation dataset has no prompt column: use .conversations(), or .prompts() for "
                            "the conversations up to their last assistant turn")
        for role in ("instruction", "input", "text"):
            if role in self._roles:
                return self._roles[role]
        raise DataError("this dataset has no prompt column")  # pragma: no cover - roles are validated on load

    # -- steps ----------------------------------------------------------------------------------

    def clean(self, *, normalize: bool = True, strip_html: bool = False, lower: bool = False,
              dedupe: bool = True, near_dedupe: float | bool | None = None, min_chars: int | None = None,
              max_chars: int | None = None, min_tokens: int | None = None, max_tokens: int | None = None,
              tokenizer: Any = None, max_symbol_ratio: float | None = None, seed: int = 0) -> Dataset:
        """Clean the role columns; each enabled step reports rows changed and rows removed (and why).

        Order: strip_html, normalize (NFKC, whitespace, invisible characters), lower, symbol filter,
        character and token length filters, exact dedupe, near dedupe (MinHash over character
        5-grams; ``near_dedupe`` is the Jaccard threshold, ``True`` means 0.85). Length and symbol
        filters look at all role columns of a row joined with newlines. Rows left empty are removed.
        """
        from .cleaning import clean

        return clean(self, normalize=normalize, strip_html=strip_html, lower=lower, dedupe=dedupe,
                     near_dedupe=near_dedupe, min_chars=min_chars, max_chars=max_chars, min_tokens=min_tokens,
                     max_tokens=max_tokens, tokenizer=tokenizer, max_symbol_ratio=max_symbol_ratio, seed=seed)

    def augment(self, *, word_dropout: float = 0.0, word_swap: float = 0.0,
                paraphrase: bool | Sequence[Sequence[str]] = False, copies: int = 1, seed: int = 0,
                column: str | None = None) -> Dataset:
        """Add ``copies`` augmented copies of every original row (marked ``augmented=True``).

        Only the prompt column (instruction, else input, else text; or ``column``) is changed, so
        targets stay correct. Reproducible: the same seed gives the same rows.
        """
        from .augment import augment

        return augment(self, word_dropout=word_dropout, word_swap=word_swap, paraphrase=paraphrase,
                       copies=copies, seed=seed, column=column)

    def split(self, val: float = 0.1, test: float = 0.1, *, seed: int = 0) -> Splits:
        """Split into train/val/test by source row (augmented copies stay with their source); seeded."""
        from .split import split

        return split(self, val=val, test=test, seed=seed)

    def template(self, kind: str = "plain", *, instruction: str | None = None,
                 eos: str = "") -> list[str] | list[tuple[str, str]]:
        """Training text: ``plain`` / ``instruction`` give strings, ``seq2seq`` gives (input, target) pairs."""
        from .templates import render

        return render(self, kind, instruction=instruction, eos=eos)

    def token_stats(self, tokenizer: Any, max_length: int = 512, *, template: str | None = None,
                    max_target_length: int | None = None) -> TokenStats:
        """Token-length table (count, mean, p50, p95, max, truncation rate, total) and ``.plot()``."""
        from .stats import token_stats

        return token_stats(self, tokenizer, max_length=max_length, template=template,
                           max_target_length=max_target_length)

    def prompts(self, n: int = 8, *, template: str | None = None, include_augmented: bool = False) -> list[str]:
        """The first ``n`` prompts (input, or text), original rows first, for generation or ``compare``.

        ``template="instruction"`` returns the instruction-template prompt up to ``### Response:``. For
        conversations: each conversation up to its last assistant turn (a list of turns, for ``al.chat``).
        """
        from .templates import prompts

        return prompts(self, n, template=template, include_augmented=include_augmented)

    def originals(self) -> Dataset:
        """Only rows that were not made by ``augment`` (what evaluation should use)."""
        return self._derive(self._df[~self._df[AUGMENTED]])

    # -- for the step modules -------------------------------------------------------------------

    def _derive(self, df: pd.DataFrame, report: Sequence[DataStep] | None = None) -> Dataset:
        return Dataset(df, self._roles, run=self._run, name=self._name,
                       report=self._report if report is None else report, event_bus=self._bus)

    def _emit(self, step: str, rows_in: int, rows_out: int, changed: int = 0, **detail: Any) -> DataStep:
        """Record a step in this dataset's report and publish it on the bus."""
        detail.setdefault("removed", {})
        event = DataStep(run=self._run, step=step, rows_in=int(rows_in), rows_out=int(rows_out),
                         changed=int(changed), detail=_jsonable(detail))
        self._report.append(event)
        if self._bus is not None:
            self._bus.publish(event)
        else:
            from ..bus import bus  # looked up at call time: the process-wide bus

            bus.publish(event)
        return event


@dataclass(frozen=True)
class Splits:
    """``train``, ``val`` and ``test`` datasets; unpacks as ``train, val, test = splits``."""

    train: Dataset
    val: Dataset
    test: Dataset

    def __iter__(self) -> Iterator[Dataset]:
        return iter((self.train, self.val, self.test))

    def __getitem__(self, name: str) -> Dataset:
        if name not in ("train", "val", "test"):
            raise KeyError(name)
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def __repr__(self) -> str:
        return f"Splits(train={len(self.train)}, val={len(self.val)}, test={len(self.test)})"


def _jsonable(value: Any) -> Any:
    """Make ``detail`` JSON-safe (numpy numbers, tuples, paths), since it travels to the browser."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if value == value and abs(value) != float("inf") else None
    if hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item())
    return str(value)
