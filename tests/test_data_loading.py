"""aigc_lab.data.load: every format, BOMs, and a clear error (file + place + what to do) for each bad input."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

import aigc_lab as al
from aigc_lab.bus import EventBus
from aigc_lab.errors import DataError

ROWS = [
    {"text": "The film was wonderful, I would watch it again.", "label": "pos"},
    {"text": "Terrible plot, 'wooden' acting, and a \"twist\" you can see coming.", "label": "neg"},
    {"text": "Naïve café owners, déjà vu — 日本語のレビュー, отличный фильм.", "label": "pos"},
]
TEXTS = [r["text"] for r in ROWS]


def write(path, data: str | bytes):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def load(path, **kw):
    return al.data.load(path, event_bus=EventBus(), **kw)


def raises(path, match_parts, **kw):
    with pytest.raises(DataError) as info:
        load(path, **kw)
    msg = str(info.value)
    for part in [path.name, *match_parts]:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


# -- every format gives the same rows ----------------------------------------------------------


@pytest.fixture
def all_formats(tmp_path):
    df = pd.DataFrame(ROWS)
    paths = {
        "csv": tmp_path / "r.csv", "tsv": tmp_path / "r.tsv", "json": tmp_path / "r.json",
        "json_cols": tmp_path / "cols.json", "jsonl": tmp_path / "r.jsonl", "parquet": tmp_path / "r.parquet",
    }
    df.to_csv(paths["csv"], index=False)
    df.to_csv(paths["tsv"], index=False, sep="\t")
    write(paths["json"], json.dumps(ROWS, ensure_ascii=False, indent=2))
    write(paths["json_cols"], json.dumps({"text": TEXTS, "label": [r["label"] for r in ROWS]}, ensure_ascii=False))
    write(paths["jsonl"], "\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n\n")
    df.to_parquet(paths["parquet"])
    return paths


def test_each_format_loads_the_same_rows(all_formats, tmp_path):
    for kind, path in all_formats.items():
        ds = load(path, text="text")
        assert ds.df["text"].tolist() == TEXTS, kind
        assert ds.df["label"].tolist() == ["pos", "neg", "pos"], kind
    lines = write(tmp_path / "r.txt", "\n".join(TEXTS) + "\n\n")
    assert load(lines).df["text"].tolist() == TEXTS
    blocks = write(tmp_path / "b.txt", "\n\n".join(t.replace(", ", ",\n", 1) for t in TEXTS))
    assert [t.replace("\n", " ") for t in load(blocks, txt_mode="block").df["text"]] == TEXTS


def test_default_roles_and_in_memory_sources():
    assert al.data.load(["a b", "c d"]).roles == {"text": "text"}
    pairs = al.data.load(pd.DataFrame({"question": ["q?"], "answer": ["a."]}))
    assert pairs.roles == {"input": "question", "target": "answer"} and pairs.kind == "pairs"
    alpaca = al.data.load([{"instruction": "Say hi", "input": "", "output": "hi"}])
    assert alpaca.roles == {"instruction": "instruction", "input": "input", "target": "output"}
    source = pd.DataFrame({"body": ["x y z"]})
    ds = al.data.load(source, text="body")
    view = ds.df
    view.loc[0, "body"] = "changed"
    assert ds.df["body"][0] == "x y z" and source["body"][0] == "x y z"


def test_bom_is_stripped(tmp_path):
    path = write(tmp_path / "bom.csv", b"\xef\xbb\xbftext,label\nhello there,pos\n")
    ds = load(path, text="text")
    assert list(ds.df.columns[:2]) == ["text", "label"] and ds.df["text"][0] == "hello there"
    jl = write(tmp_path / "bom.jsonl", b'\xef\xbb\xbf{"text": "hi"}\n')
    assert load(jl).df["text"].tolist() == ["hi"]


def test_csv_quotes_and_crlf(tmp_path):
    path = write(tmp_path / "q.csv", 'text,label\r\n"a, quoted\r\nfield",x\r\nplain,y\r\n')
    assert load(path, text="text").df["text"].tolist() == ["a, quoted\nfield", "plain"]


def test_missing_and_blank_text_is_dropped_and_counted(tmp_path):
    path = write(tmp_path / "e.csv", "text,label\nfine text,a\n,b\n   ,c\nmore,d\n")
    ds = load(path, text="text")
    assert ds.df["text"].tolist() == ["fine text", "more"]
    step = ds.report[0]
    assert (step.rows_in, step.rows_out, step.detail["removed"]["empty"]) == (4, 2, 2)


def test_loading_writes_nothing(all_formats, tmp_path):
    before = sorted(os.listdir(tmp_path))
    for path in all_formats.values():
        load(path, text="text")
    assert sorted(os.listdir(tmp_path)) == before


# -- bad input: error type, file, place, what to do ---------------------------------------------


def test_csv_wrong_number_of_fields(tmp_path):
    path = write(tmp_path / "reviews.csv", "text,label\ngood,pos\ntoo, many, fields,neg\nok,pos\n")
    msg = raises(path, ["line 3", "column 10", "expected 2 fields", "quotes"], text="text")
    assert "skip_bad_rows=True" in msg


def test_tsv_too_few_fields(tmp_path):
    path = write(tmp_path / "reviews.tsv", "text\tlabel\tid\na\tb\t1\nonly two\tfields\n")
    raises(path, ["line 3", "column 16", "expected 3 fields", "found 2"], text="text")


def test_csv_unclosed_quote(tmp_path):
    path = write(tmp_path / "q.csv", 'text,label\nfine,a\n"never closed,b\nx,c\n')
    raises(path, ["line 3", "never closed"], text="text")


def test_jsonl_invalid_json_line(tmp_path):
    path = write(tmp_path / "data.jsonl", '{"text": "a"}\n{"text": "b",}\n{"text": "c"}\n')
    raises(path, ["line 2, column", "invalid JSON"])


def test_jsonl_non_object_line(tmp_path):
    path = write(tmp_path / "data.jsonl", '{"text": "a"}\n\n["not", "an", "object"]\n')
    raises(path, ["line 3", "array, not an object"])


def test_json_syntax_error_names_line_and_column(tmp_path):
    path = write(tmp_path / "data.json", '[\n  {"text": "a"},\n  {"text": "b" "c"}\n]\n')
    raises(path, ["line 3, column 16", "invalid JSON"])


def test_json_array_element_not_an_object(tmp_path):
    path = write(tmp_path / "data.json", '[\n  {"text": "a"},\n  "just a string"\n]')
    raises(path, ["line 3", "element 1 is a string"])


def test_json_lines_in_a_json_file(tmp_path):
    path = write(tmp_path / "data.json", '{"text": "a"}\n{"text": "b"}\n')
    raises(path, ["line 2, column 1", "jsonl"])


def test_json_columns_of_different_lengths(tmp_path):
    path = write(tmp_path / "cols.json", '{"text": ["a", "b"], "label": ["x"]}')
    raises(path, ["different lengths", "'text': 2", "'label': 1"])


def test_latin1_bytes_name_line_byte_and_encoding(tmp_path):
    path = write(tmp_path / "reviews.csv", "text,label\nok,pos\ncaf\xe9 au lait,neg\n".encode("latin-1"))
    raises(path, ["line 3, byte 4", "b'\\xe9'", "encoding='latin-1'"], text="text")
    assert load(path, text="text", encoding="latin-1").df["text"][1] == "café au lait"


def test_utf16_file(tmp_path):
    path = write(tmp_path / "u16.txt", "hello\nworld\n".encode("utf-16"))
    raises(path, ["byte 0", "UTF-16", "encoding='utf-16'"])


def test_missing_column_lists_existing_columns(tmp_path):
    path = write(tmp_path / "reviews.csv", "body,label\nhello,pos\n")
    raises(path, ["no column 'text'", "'body', 'label'"], text="text")
    raises(path, ["'bdy'", "did you mean 'body'"], text="bdy")
    raises(path, ["no column 'answer'"], input="body", target="answer")


def test_ambiguous_columns_ask_which(tmp_path):
    path = write(tmp_path / "reviews.csv", "body,label\nhello,pos\n")
    raises(path, ["say which column", "'body', 'label'"])


def test_empty_file(tmp_path):
    raises(write(tmp_path / "empty.csv", b""), ["empty", "0 bytes"])
    raises(write(tmp_path / "blank.jsonl", b"\n\n  \n"), ["empty"])


def test_header_only_csv(tmp_path):
    raises(write(tmp_path / "header.csv", "text,label\n"), ["no data rows", "'text', 'label'"])


def test_binary_file_with_nul_bytes(tmp_path):
    path = write(tmp_path / "weird.txt", b"first line\nab\x00\x01\x02binary")
    raises(path, ["line 2, byte 3", "NUL", "binary"])


def test_parquet_with_the_wrong_extension(tmp_path):
    path = tmp_path / "actually_parquet.csv"
    pd.DataFrame(ROWS).to_parquet(path)
    raises(path, ["byte 0", "Parquet", "format='parquet'"], text="text")
    assert load(path, text="text", format="parquet").df["text"].tolist() == TEXTS


def test_text_file_named_parquet(tmp_path):
    path = write(tmp_path / "data.parquet", "text\nhello\n")
    raises(path, ["byte 0", "not a Parquet file", "format='csv'"])


def test_missing_file_suggests_close_names(tmp_path):
    write(tmp_path / "reviews.csv", "text\nhi\n")
    msg = raises(tmp_path / "review.csv", ["no such file", str(tmp_path)])
    assert "reviews.csv" in msg


def test_folder_and_unknown_extension(tmp_path):
    raises(tmp_path, ["folder"])
    raises(write(tmp_path / "data.xlsx", b"whatever"), ["'.xlsx'", "format='csv'"])


def test_nested_value_in_text_column(tmp_path):
    path = write(tmp_path / "n.jsonl", '{"text": "ok"}\n{"text": ["a", "list"]}\n')
    raises(path, ["line 2", "column 'text'", "list"])


# -- skipping bad rows ---------------------------------------------------------------------------


def test_skip_bad_rows_counts_and_warns(tmp_path):
    path = write(tmp_path / "mixed.jsonl",
                 '{"text": "a"}\nnot json\n{"text": "b"}\n[1]\n{"text": ["x"]}\n{"text": "c"}\n')
    with pytest.warns(al.data.BadRowsWarning, match=r"mixed.jsonl: skipped 3 bad row\(s\): line 2"):
        ds = load(path, skip_bad_rows=True)
    assert ds.df["text"].tolist() == ["a", "b", "c"]
    step = ds.report[0]
    assert step.step == "load" and step.detail["skipped_bad_rows"] == 3
    assert step.detail["removed"]["bad_row"] == 3 and (step.rows_in, step.rows_out) == (6, 3)
    assert step.detail["file"] == str(path)


def test_skip_bad_rows_csv(tmp_path):
    path = write(tmp_path / "r.csv", "text,label\ngood,pos\nbad,row,here\nfine,neg\n")
    with pytest.warns(al.data.BadRowsWarning, match="line 3"):
        ds = load(path, text="text", skip_bad_rows=True)
    assert ds.df["text"].tolist() == ["good", "fine"] and ds.report[0].detail["skipped_bad_rows"] == 1
