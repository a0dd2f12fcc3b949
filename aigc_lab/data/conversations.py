"""Conversation data: OpenAI ``messages``, ShareGPT ``conversations`` and Alpaca rows as one form.

Every conversation becomes a list of ``{"role", "content"}`` turns (the OpenAI form, which
``apply_chat_template`` takes as is) with roles ``system``, ``user``, ``assistant`` and ``tool``. A row that
cannot be a conversation (an unknown role, an empty turn, two assistant turns in a row, no assistant turn)
raises ``ConversationError`` naming the file, the row and what to change; ``skip_bad_rows=True`` skips it.
``load`` sends rows here when it sees a ``messages`` or ``conversations`` column, or when told
``format="messages" | "sharegpt" | "alpaca"`` (Alpaca is never guessed: instruction/output columns load as pairs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import ConversationError, DataError
from ..runs import new_run_id
from .dataset import MAX_LISTED, Dataset, with_provenance

if TYPE_CHECKING:
    from ..bus import EventBus

MESSAGES = "messages"
"""The column of a conversation dataset (its role ``messages``): one list of turns per row."""

CHAT_FORMATS: dict[str, str] = {"messages": "messages", "openai": "messages", "sharegpt": "sharegpt",
                                "alpaca": "alpaca"}
"""``format=`` values that name a conversation layout (the file format then comes from the extension)."""

ROLES: dict[str, str] = {
    "system": "system", "developer": "system",
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
    "model": "assistant", "function_call": "assistant",
    "tool": "tool", "function": "tool", "observation": "tool", "ipython": "tool",
}
"""Role names seen in the wild (OpenAI, ShareGPT, LLaMA-Factory, Gemma) -> the four roles a template knows."""

_COLUMN = {"messages": "messages", "sharegpt": "conversations"}


def split_format(format: str | None) -> tuple[str | None, str | None]:
    """``format=`` as (conversation layout or None, file format or None): ``"sharegpt"`` -> ("sharegpt", None)."""
    if format is not None and format.lower() in CHAT_FORMATS:
        return CHAT_FORMATS[format.lower()], None
    return None, format


def detect(columns: Sequence[Any], told: str | None) -> str | None:
    """The conversation layout of a table: the one told, else by column (``messages``, ``conversations``)."""
    cols = {str(c) for c in columns}
    if told is not None:
        return told
    if "messages" in cols:
        return "messages"
    if "conversations" in cols:
        return "sharegpt"
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if _missing(value):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, dict)):  # OpenAI content parts, tool calls: kept as text
        if isinstance(value, list) and all(isinstance(p, Mapping) and p.get("type") == "text" for p in value):
            return "".join(str(p.get("text", "")) for p in value)
        return json.dumps(value, ensure_ascii=False)
    return None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _as_list(value: Any) -> list[Any] | None:
    """A list of turns from JSON (list) or Parquet (numpy array); a JSON string holding a list is parsed."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist") and not isinstance(value, (int, float)):
        out = value.tolist()
        return out if isinstance(out, list) else None
    return None


def normalize_turns(turns: Sequence[Any]) -> list[dict[str, str]]:
    """Turns of either layout (role/content or from/value) as ``{"role", "content"}`` with canonical roles.

    Raises ``ConversationError`` with what is wrong (no file or row: ``to_conversation`` adds them).
    """
    out: list[dict[str, str]] = []
    for i, turn in enumerate(turns):
        if hasattr(turn, "items") and not isinstance(turn, Mapping):
            turn = dict(turn.items())
        if not isinstance(turn, Mapping):
            raise ConversationError(f"turn {i} is a {type(turn).__name__}, not an object; each turn must look like "
                                    '{"role": "user", "content": "..."} (or ShareGPT\'s {"from": ..., "value": ...})')
        role_key = "role" if "role" in turn else "from" if "from" in turn else None
        if role_key is None:
            raise ConversationError(f"turn {i} has no 'role' (or ShareGPT 'from') key; its keys are "
                                    f"{', '.join(map(repr, turn)) or 'none'}")
        raw = str(turn[role_key])
        role = ROLES.get(raw.strip().lower())
        if role is None:
            raise ConversationError(f"turn {i} has the unknown role {raw!r}; use one of "
                                    f"{', '.join(sorted(set(ROLES.values())))} (aliases: "
                                    f"{', '.join(k for k in ROLES if k not in ROLES.values())})")
        content_key = "content" if "content" in turn else "value" if "value" in turn else None
        value = turn[content_key] if content_key else None
        if value is None and turn.get("tool_calls"):
            value = turn["tool_calls"]
        content = _text(value)
        if content is None or not content.strip():
            raise ConversationError(f"turn {i} ({role}) has empty content; give it text, or drop the turn")
        if out and role == "assistant" and out[-1]["role"] == "assistant":
            raise ConversationError(f"turns {i - 1} and {i} are two assistant turns in a row, which chat templates "
                                    "do not allow; merge them into one turn")
        out.append({"role": role, "content": content})
    if not any(t["role"] == "assistant" for t in out):
        raise ConversationError("it has no assistant turn, so nothing to learn or to compare with; "
                                "add the assistant's reply")
    return out


def from_alpaca(record: Mapping[str, Any]) -> list[Any]:
    """An Alpaca row (instruction, optional input, output; optional system and history) as turns."""
    if "instruction" not in record or "output" not in record:
        raise ConversationError(f"an Alpaca row needs 'instruction' and 'output'; it has "
                                f"{', '.join(map(repr, record)) or 'nothing'}")
    turns: list[Any] = []
    system = _text(record.get("system"))
    if system and system.strip():
        turns.append({"role": "system", "content": system})
    for pair in _as_list(record.get("history")) or []:
        pair = _as_list(pair)
        if not pair or len(pair) != 2:
            raise ConversationError("its 'history' must be a list of [instruction, response] pairs")
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    instruction, extra = _text(record.get("instruction")) or "", _text(record.get("input")) or ""
    user = f"{instruction.strip()}\n\n{extra.strip()}" if extra.strip() else instruction
    turns += [{"role": "user", "content": user}, {"role": "assistant", "content": record.get("output")}]
    return turns


def to_conversation(record: Mapping[str, Any], layout: str) -> list[dict[str, str]]:
    """One row of ``layout`` (``messages``, ``sharegpt``, ``alpaca``) as a normalised conversation."""
    if layout == "alpaca":
        return normalize_turns(from_alpaca(record))
    column = _COLUMN[layout]
    if _missing(record.get(column)):
        other = next((c for c in _COLUMN.values() if not _missing(record.get(c))), None)
        hint = f" (it has {other!r}: pass format={'sharegpt' if other == 'conversations' else 'messages'!r})" \
            if other else ""
        raise ConversationError(f"no {column!r} field{hint}")
    turns = _as_list(record[column])
    if turns is None:
        raise ConversationError(f"{column!r} is a {type(record[column]).__name__}, not a list of turns")
    if not turns:
        raise ConversationError(f"{column!r} is an empty list; a conversation needs at least one assistant turn")
    return normalize_turns(turns)


def load_conversations(df: pd.DataFrame, places: list[str], bad: list[str], layout: str, *, name: str, fmt: str,
                       skip: bool, event_bus: EventBus | None = None) -> Dataset:
    """Rows read by ``load`` as a conversation ``Dataset`` (role ``messages``); bad rows raise or are skipped."""
    convs: list[list[dict[str, str]]] = []
    keep: list[int] = []
    rows_read = len(df) + len(bad)
    bad = list(bad)
    for i, record in enumerate(df.to_dict("records")):
        place = places[i] if i < len(places) else f"row {i}"
        try:
            convs.append(to_conversation(record, layout))
            keep.append(i)
        except ConversationError as exc:
            if not skip:
                raise ConversationError(f"{name}, {place}: {exc} (or load(..., skip_bad_rows=True) to skip such "
                                        "rows)") from None
            bad.append(f"{place}: {exc}")
    if not convs:
        raise DataError(f"{name}: none of its {len(df)} rows is a usable conversation; the first problem: "
                        f"{bad[0] if bad else 'no rows'}")
    drop = [c for c in ("messages", "conversations", "instruction", "input", "output", "system", "history")
            if c in df.columns and (layout == "alpaca" or c == _COLUMN[layout])]
    out = df.iloc[keep].drop(columns=drop).reset_index(drop=True)
    out.insert(0, MESSAGES, pd.Series(convs, dtype=object))
    out = with_provenance(out, name, bad, stacklevel=3)
    ds = Dataset(out, {"messages": MESSAGES}, run=new_run_id("data"), name=name, event_bus=event_bus)
    turns = sum(len(c) for c in convs)
    ds._emit("load", rows_read, len(out), file=name, format=fmt, layout=layout,
             columns=[str(c) for c in out.columns], roles={"messages": MESSAGES}, turns=turns,
             skipped_bad_rows=len(bad), bad_rows=bad[:MAX_LISTED], removed={"bad_row": len(bad), "empty": 0})
    return ds


# ---------------------------------------------------------------------------------------------
# Helpers for the dataset steps (cleaning, dedupe, lengths)


def conversation_text(conv: Sequence[Mapping[str, str]]) -> str:
    """The turns' contents joined with newlines: what length and symbol filters look at."""
    return "\n".join(t["content"] for t in conv)


def map_contents(conv: Sequence[Mapping[str, str]], fn: Any) -> list[dict[str, str]]:
    """The conversation with ``fn`` applied to every turn's content (roles unchanged)."""
    return [{**t, "content": fn(t["content"])} for t in conv]


def is_usable(conv: Any) -> bool:
    """Whether a (cleaned) conversation still has text in every turn and at least one assistant turn."""
    if not isinstance(conv, list) or not conv:
        return False
    return all(str(t.get("content", "")).strip() for t in conv) and any(t.get("role") == "assistant" for t in conv)


def key(conv: Sequence[Mapping[str, str]]) -> str:
    """A hashable form of a conversation (for exact dedupe)."""
    return json.dumps([[t["role"], t["content"]] for t in conv], ensure_ascii=False)
