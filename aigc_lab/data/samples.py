"""Sample corpora that exist on every machine with Python, so nothing needs a download.

- ``python_docs()``: English prose bundled with CPython, a causal-LM corpus
  (``python_docs_dataset()`` gives it as a ``Dataset``; ``load(python_docs())`` does the same).
- ``dates(n, seed)``: a generated seq2seq task, dates in many surface forms -> ``YYYY-MM-DD``, whose
  exact-match accuracy (``date_accuracy``) measures a model without any judgement.
- ``catalogue_chats(n, seed)``: conversations asking about a made-up shop catalogue (``catalogue``), each
  answered with an exact value, for chat fine-tuning (``chat_accuracy``).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from .dataset import Dataset


def python_docs() -> list[str]:
    """English prose from CPython's bundled documentation topics (``pydoc_data.topics``), one text per topic.

    About 80 texts, 460k characters: enough to train a small tokenizer and a tiny language model.
    """
    from pydoc_data.topics import topics

    return [topics[name].strip() for name in sorted(topics)]


def python_docs_dataset(**load_kwargs) -> Dataset:
    """``python_docs()`` as a text ``Dataset`` (column ``text``), ready for ``clean``/``split``/``template``."""
    from .loading import load

    return load(python_docs(), **load_kwargs)


# ---------------------------------------------------------------------------------------------
# Dates

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_ORDINAL_WORDS = (
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh",
    "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth",
    "twentieth", "twenty-first", "twenty-second", "twenty-third", "twenty-fourth", "twenty-fifth", "twenty-sixth",
    "twenty-seventh", "twenty-eighth", "twenty-ninth", "thirtieth", "thirty-first",
)
FIRST_DATE, LAST_DATE = dt.date(1950, 1, 1), dt.date(2049, 12, 31)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _mon(d: dt.date) -> str:
    return MONTHS[d.month - 1][:3]


_FORMS: tuple[Callable[[dt.date], str], ...] = (
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",                    # March 3, 2021
    lambda d: f"{_mon(d)} {d.day}, {d.year}",                                # Mar 3, 2021
    lambda d: f"{_mon(d)}. {d.day}, {d.year}",                               # Mar. 3, 2021
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",                     # 3 March 2021
    lambda d: f"{d.day} {_mon(d)} {d.year}",                                 # 3 Mar 2021
    lambda d: f"{_ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",        # 3rd of March 2021
    lambda d: f"the {_ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}",   # the 3rd of March, 2021
    lambda d: f"the {_ORDINAL_WORDS[d.day - 1]} of {MONTHS[d.month - 1]}, {d.year}",  # the third of March, 2021
    lambda d: f"{MONTHS[d.month - 1]} {_ordinal(d.day)}, {d.year}",          # March 3rd, 2021
    lambda d: f"{MONTHS[d.month - 1].lower()} {_ordinal(d.day)} {d.year}",   # march 3rd 2021
    lambda d: f"{MONTHS[d.month - 1].upper()} {d.day} {d.year}",             # MARCH 3 2021
    lambda d: f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}",  # Wednesday, March 3, 2021
    lambda d: f"{WEEKDAYS[d.weekday()][:3]} {d.day} {_mon(d)} {d.year}",     # Wed 3 Mar 2021
    lambda d: f"{WEEKDAYS[d.weekday()]} the {_ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{d.month:02d}/{d.day:02d}/{d.year} (MM/DD/YYYY)",            # 03/03/2021 with stated order
    lambda d: f"{d.day:02d}/{d.month:02d}/{d.year} (DD/MM/YYYY)",
    lambda d: f"{d.day}.{d.month}.{d.year} (D.M.Y)",                         # 3.3.2021
    lambda d: f"{d.year}.{d.month:02d}.{d.day:02d}",                         # 2021.03.03
    lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",                         # 2021/03/03
    lambda d: f"{d.year}{d.month:02d}{d.day:02d}",                           # 20210303
    lambda d: f"{d.day}-{_mon(d)}-{d.year}",                                 # 3-Mar-2021
    lambda d: f"{d.year}, {MONTHS[d.month - 1]} {d.day}",                    # 2021, March 3
)
"""Surface forms of a date; each is unambiguous (numeric day/month orders are stated)."""


def dates(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """A date-normalisation seq2seq task: ``input`` a date in one of many forms, ``target`` ``YYYY-MM-DD``.

    Dates are drawn uniformly from 1950-01-01 to 2049-12-31 and forms uniformly from ``_FORMS`` with
    ``random.Random(seed)``: the same ``(n, seed)`` always gives the same table.
    """
    import pandas as pd

    if n < 0:
        raise DataError(f"n must be >= 0, not {n}")
    rng = random.Random(seed)
    span = (LAST_DATE - FIRST_DATE).days
    inputs, targets = [], []
    for _ in range(n):
        d = FIRST_DATE + dt.timedelta(days=rng.randint(0, span))
        inputs.append(rng.choice(_FORMS)(d))
        targets.append(d.isoformat())
    return pd.DataFrame({"input": inputs, "target": targets})


def date_accuracy(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Exact-match accuracy (surrounding whitespace ignored) of predicted ``YYYY-MM-DD`` strings."""
    predictions, targets = list(predictions), list(targets)
    if len(predictions) != len(targets):
        raise DataError(f"{len(predictions)} predictions for {len(targets)} targets: give one per target")
    if not targets:
        raise DataError("no targets: accuracy of nothing is undefined")
    hits = sum(str(p).strip() == str(t).strip() for p, t in zip(predictions, targets, strict=True))
    return hits / len(targets)


# ---------------------------------------------------------------------------------------------
# A made-up catalogue, asked about in conversations

_NAMES = ("Zorb", "Quill", "Brisk", "Tarn", "Mello", "Vexa", "Pim", "Orla", "Dune", "Kite", "Nox", "Fable",
          "Glim", "Hush", "Juno", "Lark")
_THINGS = ("lamp", "kettle", "chair", "clock", "mug", "radio", "fan", "desk")
_COLOURS = ("red", "blue", "green", "black", "white", "yellow", "grey", "orange")
_QUESTIONS: dict[str, tuple[str, ...]] = {
    "colour": ("What colour is the {item}?", "Which colour does the {item} come in?",
               "Tell me the colour of the {item}."),
    "price": ("How much is the {item}?", "What does the {item} cost?", "What is the price of the {item}?"),
    "stock": ("How many {item}s are in stock?", "How many {item}s do you have?", "What is the stock of the {item}?"),
}
CATALOGUE_SYSTEM = "You answer questions about the Acme catalogue with the exact value only."


def catalogue(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """A made-up shop catalogue: ``item`` (unique name), ``colour``, ``price`` (``$N``) and ``stock`` (a number)."""
    import pandas as pd

    if not 1 <= n <= len(_NAMES):
        raise DataError(f"n must be between 1 and {len(_NAMES)}, not {n}")
    rng = random.Random(seed)
    names = rng.sample(_NAMES, n)
    rows = [{"item": f"{name} {rng.choice(_THINGS)}", "colour": rng.choice(_COLOURS),
             "price": f"${rng.randint(5, 99)}", "stock": str(rng.randint(0, 40))} for name in names]
    return pd.DataFrame(rows)


def catalogue_sheet(items: int = 12, seed: int = 0) -> list[str]:
    """The facts of ``catalogue(items, seed)`` as plain text: sentences and a FAQ (``Q: ... A: ...``), what a base
    model can be pre-trained on before it learns, from ``catalogue_chats``, to answer in a chat (no chat markers)."""
    out = []
    for row in catalogue(items, seed).to_dict("records"):
        item = row["item"]
        out += [f"The {item} is {row['colour']}.", f"The {item} costs {row['price']}.",
                f"There are {row['stock']} {item}s in stock."]
        out += [f"Q: {q.format(item=item)} A: {row[field]}" for field, qs in _QUESTIONS.items() for q in qs]
    return out


def catalogue_chats(n: int = 400, seed: int = 0, *, items: int = 12, max_questions: int = 2) -> list[dict]:
    """Conversations about ``catalogue(items, seed)``: a system turn, then 1..``max_questions`` questions, each
    answered with the exact value (``blue``, ``$12``, ``7``), as OpenAI-style ``{"messages": [...]}`` rows that
    ``al.data.load`` reads as they are. Answers are exact, so ``chat_accuracy`` needs no judgement.
    """
    if n < 0 or max_questions < 1:
        raise DataError("n must be >= 0 and max_questions >= 1")
    table = catalogue(items, seed).to_dict("records")
    rng = random.Random(f"chats/{seed}")
    rows = []
    for _ in range(n):
        turns = [{"role": "system", "content": CATALOGUE_SYSTEM}]
        for _ in range(rng.randint(1, max_questions)):
            row, field = rng.choice(table), rng.choice(tuple(_QUESTIONS))
            turns.append({"role": "user", "content": rng.choice(_QUESTIONS[field]).format(item=row["item"])})
            turns.append({"role": "assistant", "content": row[field]})
        rows.append({"messages": turns})
    return rows


def chat_accuracy(replies: Sequence[str], conversations: Sequence[Sequence[dict]]) -> float:
    """Exact match (whitespace ignored) of ``replies`` against each conversation's last assistant turn."""
    targets = [[t for t in c if t["role"] == "assistant"][-1]["content"] for c in conversations]
    return date_accuracy(replies, targets)
