"""``load``: read csv, tsv, json, jsonl, txt or parquet (or a DataFrame / list) into a ``Dataset``.

Files are read whole and parsed here rather than by pandas' readers so that every problem can be
reported with the file, the line (and column) and what to do about it. Their bytes come from
``sources.py`` (decompressed, whatever the format) and text formats are decoded there too (byte-order
marks, encodings), so every format reads compressed and UTF-16/32 files alike. Loading never writes anything.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import DataError
from ..runs import new_run_id
from .dataset import MAX_LISTED, ROLE_ORDER, Dataset, empty_rows, with_provenance
from .sources import COMPRESSIONS, decode_text, read_source

if TYPE_CHECKING:
    from ..bus import EventBus

FORMATS: dict[str, str] = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".txt": "txt", ".text": "txt", ".md": "txt", ".parquet": "parquet", ".pq": "parquet",
}


class BadRowsWarning(UserWarning):
    """Rows were skipped because ``skip_bad_rows=True`` and they could not be read."""


class _Rows:
    """Parsed records plus, for each, where it came from ("line 7", "row 3"), and the bad rows seen."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.places: list[str] = []
        self.bad: list[str] = []  # "line 7: reason"
        self.columns: list[str] | None = None


def load(source: str | os.PathLike[str] | pd.DataFrame | Sequence[str] | Sequence[Mapping[str, Any]], *,
         text: str | None = None, input: str | None = None, target: str | None = None,
         instruction: str | None = None, format: str | None = None, txt_mode: str = "line",
         skip_bad_rows: bool = False, encoding: str = "utf-8", event_bus: EventBus | None = None) -> Dataset:
    """Load examples into a ``Dataset``.

    ``source``: a path (csv, tsv, json = array of objects or object of columns, jsonl, txt, parquet;
    the extension picks the format unless ``format=`` is given), a DataFrame, a list of strings (one
    text each, column ``text``) or a list of dicts. Say which columns hold the text: ``text=`` for
    causal-LM text, or ``input=`` and ``target=`` (optionally ``instruction=``) for pairs; when none is
    given, ``text``, ``input``/``target``, ``instruction``/``output``, ``prompt``/``completion`` or
    ``question``/``answer`` columns (or a single column) are used. ``txt_mode``: ``"line"`` (one example
    per non-blank line) or ``"block"`` (examples separated by blank lines). Rows whose text is missing or
    blank are dropped and counted. ``skip_bad_rows=True`` skips unreadable rows, counts them in the
    report and warns (``BadRowsWarning``); otherwise the first one raises ``DataError`` naming the file
    and the line. Conversations (a ``messages`` or ``conversations`` column, or ``format="messages"`` /
    ``"sharegpt"`` / ``"alpaca"``) load as a chat dataset: see ``aigc_lab.data.conversations``.
    """
    if txt_mode not in ("line", "block"):
        raise DataError(f"txt_mode must be 'line' or 'block', not {txt_mode!r}")
    fmt: str
    compression: str | None = None
    # -- conversations hook: format="messages" / "sharegpt" / "alpaca" name a layout, not a file format
    from . import conversations

    layout, format = conversations.split_format(format)
    # --
    if isinstance(source, pd.DataFrame):
        name, fmt = "<DataFrame>", "dataframe"
        df, places, bad = source.copy(), [f"row {i!r}" for i in source.index], []
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        df, places, bad, fmt, compression = _read_file(Path(source), name, format, txt_mode, text, skip_bad_rows,
                                                       encoding)
    elif isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        name, fmt = "<list>", "list"
        df, places, bad = _from_list(source, text)
    else:
        raise DataError(f"cannot load a {type(source).__name__}: give a file path, a pandas DataFrame, "
                        "a list of strings or a list of dicts")

    # -- conversations hook: rows with a messages / conversations column (or a told layout) become conversations
    if text is None and input is None and target is None and instruction is None:
        layout = conversations.detect(df.columns, layout)
    if layout is not None:
        return conversations.load_conversations(df, places, bad, layout, name=name, fmt=fmt, skip=skip_bad_rows,
                                                event_bus=event_bus)
    # --
    roles = _pick_roles(list(df.columns), name, text=text, input=input, target=target, instruction=instruction)
    rows_read = len(df) + len(bad)
    df, places, more_bad = _role_values_to_text(df, places, roles, name, skip_bad_rows)
    bad += more_bad
    empty = empty_rows(df, roles)
    n_empty = int(empty.sum())
    df = df[~empty].reset_index(drop=True)
    for col in roles.values():
        df[col] = df[col].fillna("").astype(str)
    df = with_provenance(df, name, bad, stacklevel=2)
    ds = Dataset(df, roles, run=new_run_id("data"), name=name, event_bus=event_bus)
    removed = {"bad_row": len(bad), "empty": n_empty}
    ds._emit("load", rows_read, len(df), file=name, format=fmt, compression=compression,
             columns=[str(c) for c in df.columns], roles=roles, skipped_bad_rows=len(bad),
             bad_rows=bad[:MAX_LISTED], removed=removed)
    return ds


# ---------------------------------------------------------------------------------------------
# Sources other than files


def _from_list(items: Sequence[Any], text: str | None) -> tuple[pd.DataFrame, list[str], list[str]]:
    items = list(items)
    if all(isinstance(x, str) for x in items):
        return pd.DataFrame({text or "text": items}, dtype=object), [f"item {i}" for i in range(len(items))], []
    if all(isinstance(x, Mapping) for x in items):
        return pd.DataFrame.from_records([dict(x) for x in items]), [f"item {i}" for i in range(len(items))], []
    kinds = sorted({type(x).__name__ for x in items})
    raise DataError(f"a list to load must hold only strings or only dicts, this one holds {', '.join(kinds)}")


# ---------------------------------------------------------------------------------------------
# Files


def _read_file(path: Path, name: str, format: str | None, txt_mode: str, text_col: str | None,
               skip: bool, encoding: str) -> tuple[pd.DataFrame, list[str], list[str], str, str | None]:
    """Rows of one file, where each came from, its bad rows, its format and its compression (or None)."""
    if not path.exists():
        here = path.parent if str(path.parent) else Path(".")
        near = difflib.get_close_matches(path.name, [p.name for p in here.iterdir()], n=3) if here.is_dir() else []
        hint = f" Did you mean {', '.join(repr(str(here / n)) for n in near)}?" if near else ""
        raise DataError(f"{name}: no such file (looked in {here.resolve()}).{hint}")
    if path.is_dir():
        raise DataError(f"{name} is a folder, not a file: give the path of one data file inside it")
    src = read_source(path, name)
    where = src.where
    suffixes = [Path(n).suffix.lower() for n in src.names]
    fmt = (format or next((FORMATS[x] for x in suffixes if x in FORMATS), "")).lower()
    if fmt not in set(FORMATS.values()):
        known = ", ".join(sorted(FORMATS))
        suffix = next((x for x in suffixes if x), "")
        inside = f" (inside the {src.compression} file)" if src.compression else ""
        what = (f"format={format!r}" if format else f"the extension {suffix!r}{inside}" if suffix
                else f"no extension{inside}")
        raise DataError(f"{where}: {what} is not a format aigc-lab reads ({known}; compressed: "
                        f"{', '.join(sorted(COMPRESSIONS))}); pass format='csv' (or tsv, json, jsonl, txt, parquet)")
    raw = src.data
    if not raw.strip():
        raise DataError(f"{where} is empty ({len(raw)} bytes): nothing to load; check that it was saved completely")
    if fmt == "parquet":
        return (*_read_parquet(raw, where), "parquet", src.compression)
    content = decode_text(raw, where, encoding, fmt)
    if not content.strip():
        raise DataError(f"{where} holds only whitespace: nothing to load")
    if fmt in ("csv", "tsv"):
        rows = _parse_delimited(content, where, "," if fmt == "csv" else "\t", skip)
    elif fmt == "json":
        rows = _parse_json(content, where, skip)
    elif fmt == "jsonl":
        rows = _parse_jsonl(content, where, skip)
    else:
        rows = _parse_txt(content, txt_mode, text_col or "text")
    if not rows.records and not rows.bad:
        header = f" (it has a header: {', '.join(map(repr, rows.columns))})" if rows.columns else ""
        raise DataError(f"{where} has no data rows{header}: nothing to load")
    if not rows.records:
        raise DataError(f"{where}: none of its {len(rows.bad)} rows could be read; the first problem: {rows.bad[0]}")
    df = pd.DataFrame.from_records(rows.records, columns=rows.columns)
    return df, rows.places, rows.bad, fmt, src.compression


def _read_parquet(raw: bytes, name: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    if not raw.startswith(b"PAR1"):
        looks_text = b"\x00" not in raw[:4096]
        hint = "it looks like text: pass format='csv' (or tsv, json, jsonl, txt)" if looks_text else "re-export it"
        raise DataError(f"{name}, byte 0: not a Parquet file (it does not start with 'PAR1'); {hint}")
    try:
        df = pd.read_parquet(io.BytesIO(raw))
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for broken files
        raise DataError(f"{name}: a broken Parquet file ({type(e).__name__}: {e}); re-export it") from None
    if len(df) == 0:
        raise DataError(f"{name} has no data rows (columns: {', '.join(map(repr, map(str, df.columns)))})")
    return df, [f"row {i}" for i in range(len(df))], []


# ---------------------------------------------------------------------------------------------
# Text formats


def _fail_or_skip(rows: _Rows, skip: bool, name: str, place: str, reason: str, todo: str) -> None:
    if not skip:
        raise DataError(f"{name}, {place}: {reason}; {todo} (or load(..., skip_bad_rows=True) to skip such rows)")
    rows.bad.append(f"{place}: {reason}")


def _parse_delimited(content: str, name: str, delim: str, skip: bool) -> _Rows:
    rows = _Rows()
    lines = content.split("\n")
    what = "comma" if delim == "," else "tab"
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delim, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if "end of data" in str(e) or reader.line_num >= len(lines):
                _fail_or_skip(rows, skip, name, f"line {start}", "a quoted field starting here is never closed",
                              'add the missing closing double quote (")')
                break
            _fail_or_skip(rows, skip, name, f"line {reader.line_num}", f"broken quoting ({e})",
                          'put double quotes around the whole field and double any quote inside it ("")')
            continue
        if not rec or (len(rec) == 1 and not rec[0].strip() and rows.columns is not None and len(rows.columns) > 1):
            continue  # blank line
        if rows.columns is None:
            rows.columns = [c.strip() for c in rec]
            dup = sorted({c for c in rows.columns if rows.columns.count(c) > 1})
            if dup:
                raise DataError(f"{name}, line {start}: the header names column(s) {', '.join(map(repr, dup))} "
                                "more than once; give every column a distinct name")
            continue
        if len(rec) != len(rows.columns):
            line = lines[start - 1] if start - 1 < len(lines) else ""
            col = _extra_field_column(line, delim, len(rows.columns))
            place = f"line {start}" + (f", column {col}" if col else "")
            _fail_or_skip(rows, skip, name, place,
                          f"expected {len(rows.columns)} fields ({', '.join(rows.columns)}) but found {len(rec)}",
                          f"a field that contains a {what} must be in double quotes")
            continue
        rows.records.append(dict(zip(rows.columns, rec, strict=True)))
        rows.places.append(f"line {start}")
    return rows


def _extra_field_column(line: str, delim: str, n_fields: int) -> int | None:
    """1-based character column where the first extra field starts (or the line ends, for too few fields)."""
    if '"' in line:
        return None
    positions = [m.start() for m in re.finditer(re.escape(delim), line)]
    if len(positions) >= n_fields:
        return positions[n_fields - 1] + 1
    return len(line) + 1


def _parse_json(content: str, name: str, skip: bool) -> _Rows:
    stripped = content.lstrip()
    if stripped.startswith("["):
        return _parse_json_array(content, name, skip)
    try:
        obj = json.loads(content)
    except json.JSONDecodeError as e:
        hint = ("it looks like JSON Lines (one object per line): pass format='jsonl' or rename it to .jsonl"
                if e.msg == "Extra data" else "fix the JSON syntax there")
        raise DataError(f"{name}, line {e.lineno}, column {e.colno}: invalid JSON ({e.msg}); {hint}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name}, line 1: the JSON is a {type(obj).__name__}; it must be an array of objects "
                        '([{"text": ...}, ...]) or an object of columns ({"text": [...], ...})')
    lists = {k: v for k, v in obj.items() if isinstance(v, list)}
    if len(lists) == 1 and len(obj) == 1 and all(isinstance(x, dict) for x in next(iter(lists.values()))):
        key = next(iter(lists))  # {"data": [{...}, ...]}
        rows = _Rows()
        for i, rec in enumerate(lists[key]):
            rows.records.append(rec)
            rows.places.append(f"{key}[{i}]")
        rows.columns = _union_keys(rows.records)
        return rows
    if len(lists) != len(obj) or not obj:
        not_lists = [k for k in obj if k not in lists]
        raise DataError(f"{name}: a JSON object must map column names to lists of values, but "
                        f"{', '.join(map(repr, not_lists)) or 'it'} {'is' if len(not_lists) <= 1 else 'are'} not a "
                        'list; use {"text": [...], ...} or an array of objects')
    lengths = {k: len(v) for k, v in lists.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{name}: the columns have different lengths ({lengths}); every column needs one value per row")
    rows = _Rows()
    rows.columns = list(lists)
    n = next(iter(lengths.values()))
    for i in range(n):
        rows.records.append({k: v[i] for k, v in lists.items()})
        rows.places.append(f"row {i}")
    return rows


def _union_keys(records: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        seen.update(dict.fromkeys(r))
    return list(seen)


_WS = re.compile(r"\s*")


def _parse_json_array(content: str, name: str, skip: bool) -> _Rows:
    """Parse ``[obj, obj, ...]`` element by element so each element's line is known."""
    rows = _Rows()
    dec = json.JSONDecoder()
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += content.count("\n", counted, pos)
        counted = pos
        return line

    def fail(pos: int, msg: str) -> DataError:
        ln = line_at(pos)
        col = pos - (content.rfind("\n", 0, pos) + 1) + 1
        return DataError(f"{name}, line {ln}, column {col}: invalid JSON ({msg}); fix the JSON syntax there")

    pos = _WS.match(content, 0).end() + 1  # after "["
    index = 0
    while True:
        pos = _WS.match(content, pos).end()
        if pos < len(content) and content[pos] == "]" and index == 0:
            pos += 1
            break
        try:
            value, end = dec.raw_decode(content, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{name}, line {e.lineno}, column {e.colno}: invalid JSON ({e.msg}); "
                            "fix the JSON syntax there") from None
        place = f"line {line_at(pos)}"
        if isinstance(value, dict):
            rows.records.append(value)
            rows.places.append(place)
        else:
            _fail_or_skip(rows, skip, name, place, f"element {index} is a {_json_type(value)}, not an object",
                          'every element must be an object like {"text": "..."}')
        index += 1
        pos = _WS.match(content, end).end()
        if pos < len(content) and content[pos] == ",":
            pos += 1
            continue
        if pos < len(content) and content[pos] == "]":
            pos += 1
            break
        raise fail(pos, "expected ',' or ']' after an array element")
    pos = _WS.match(content, pos).end()
    if pos < len(content):
        raise fail(pos, "extra data after the closing ']'")
    rows.columns = _union_keys(rows.records)
    return rows


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null", int: "number",
            float: "number"}.get(type(value), type(value).__name__)


def _parse_jsonl(content: str, name: str, skip: bool) -> _Rows:
    rows = _Rows()
    for n, text in enumerate(content.split("\n"), start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            _fail_or_skip(rows, skip, name, f"line {n}, column {e.colno}", f"invalid JSON ({e.msg})",
                          "each line must be one complete JSON object")
            continue
        if not isinstance(value, dict):
            _fail_or_skip(rows, skip, name, f"line {n}", f"a JSON {_json_type(value)}, not an object",
                          'each line must be one JSON object like {"text": "..."}')
            continue
        rows.records.append(value)
        rows.places.append(f"line {n}")
    rows.columns = _union_keys(rows.records)
    return rows


def _parse_txt(content: str, mode: str, column: str) -> _Rows:
    rows = _Rows()
    rows.columns = [column]
    if mode == "line":
        for n, text in enumerate(content.split("\n"), start=1):
            if text.strip():
                rows.records.append({column: text.rstrip()})
                rows.places.append(f"line {n}")
        return rows
    line = 1
    for block in re.split(r"(\n[ \t]*\n(?:[ \t]*\n)*)", content):
        if block.strip() and not re.fullmatch(r"\s*", block):
            rows.records.append({column: block.strip("\n").rstrip()})
            rows.places.append(f"line {line + len(block) - len(block.lstrip(chr(10)))}")
        line += block.count("\n")
    return rows


# ---------------------------------------------------------------------------------------------
# Columns and values

_DEFAULT_ROLES: tuple[dict[str, str], ...] = (
    {"text": "text"},
    {"instruction": "instruction", "input": "input", "target": "output"},
    {"instruction": "instruction", "target": "output"},
    {"input": "input", "target": "target"},
    {"input": "input", "target": "output"},
    {"input": "prompt", "target": "completion"},
    {"input": "question", "target": "answer"},
    {"input": "source", "target": "target"},
)


def _pick_roles(columns: list[Any], name: str, *, text: str | None, input: str | None, target: str | None,
                instruction: str | None) -> dict[str, str]:
    cols = [str(c) for c in columns]
    listed = ", ".join(map(repr, cols)) or "none"
    if text is not None and (input is not None or target is not None or instruction is not None):
        raise DataError("pass either text= (one text per row) or input=/target= (pairs), not both")
    if text is None and input is None and target is None and instruction is None:
        for candidate in _DEFAULT_ROLES:
            if all(c in cols for c in candidate.values()):
                return dict(candidate)
        if len(cols) == 1:
            return {"text": cols[0]}
        raise DataError(f"{name}: say which column holds the text, e.g. load(..., text={cols[0]!r}) or "
                        f"load(..., input=..., target=...); its columns are: {listed}")
    if text is None and target is None:
        raise DataError("pairs need target= (the column with the expected output) as well as input=")
    if text is None and input is None and instruction is None:
        raise DataError("pairs need input= (the column with the prompt) as well as target=")
    roles = {"text": text, "input": input, "target": target, "instruction": instruction}
    for role in ROLE_ORDER:
        col = roles.get(role)
        if col is not None and col not in cols:
            near = difflib.get_close_matches(col, cols, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise DataError(f"{name}: no column {col!r} (asked for by {role}={col!r}){hint}; "
                            f"its columns are: {listed}")
    return {r: c for r, c in roles.items() if c is not None}


def _role_values_to_text(df: pd.DataFrame, places: list[str], roles: dict[str, str], name: str,
                         skip: bool) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Role columns must hold text: numbers become strings, missing values None, nested values are bad rows."""
    df = df.rename(columns=str)
    bad_idx: list[int] = []
    bad: list[str] = []
    for col in dict.fromkeys(roles.values()):
        values = df[col].tolist()
        out: list[Any] = []
        for i, v in enumerate(values):
            if isinstance(v, str):
                out.append(v)
            elif v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
                out.append(None)
            elif isinstance(v, (int, float)) or hasattr(v, "item"):
                out.append(str(v))
            else:
                place = places[i] if i < len(places) else f"row {i}"
                msg = f"{name}, {place}, column {col!r}: expected text but found a {type(v).__name__} ({v!r:.60})"
                if not skip:
                    raise DataError(msg + "; give plain text in this column (or skip_bad_rows=True)")
                bad_idx.append(i)
                bad.append(f"{place}: column {col!r} is a {type(v).__name__}")
                out.append(None)
        df[col] = pd.Series(out, index=df.index, dtype=object)
    if bad_idx:
        keep = [i for i in range(len(df)) if i not in set(bad_idx)]
        df = df.iloc[keep]
        places = [places[i] for i in keep]
    return df, places, bad
