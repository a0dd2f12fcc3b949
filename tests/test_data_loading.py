"""aigc_lab.data.load: every format, BOMs, and a clear error (file + place + what to do) for each bad input."""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import json
import lzma
import os
import tarfile
import zipfile

import pandas as pd
import pytest
import zstandard

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


def test_utf16_without_a_bom_names_the_encoding_to_pass(tmp_path):
    path = write(tmp_path / "u16.txt", "hello\nworld\n".encode("utf-16-le"))
    raises(path, ["line 1, byte 2", "NUL byte", "UTF-16-LE", "encoding='utf-16-le'"])
    assert load(path, encoding="utf-16-le").df["text"].tolist() == ["hello", "world"]
    big_endian = write(tmp_path / "u16be.csv", "text\nhello\n".encode("utf-16-be"))
    raises(big_endian, ["line 1, byte 1", "encoding='utf-16-be'"])


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


# -- compressed files ----------------------------------------------------------------------------

LABELS = [r["label"] for r in ROWS]


def content_of(fmt: str) -> bytes:
    """The rows of ROWS as an uncompressed file of ``fmt``."""
    df = pd.DataFrame(ROWS)
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf)
        return buf.getvalue()
    text = {
        "csv": lambda: df.to_csv(index=False),
        "tsv": lambda: df.to_csv(index=False, sep="\t"),
        "json": lambda: json.dumps(ROWS, ensure_ascii=False, indent=2),
        "jsonl": lambda: "\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n",
        "txt": lambda: "\n".join(TEXTS) + "\n",
    }[fmt]()
    return text.encode("utf-8")


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def zstd_streamed(data: bytes) -> bytes:
    """A zstd frame without the content size in its header, as `zstd` writes when reading a pipe."""
    buf = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(buf, closefd=False) as w:
        w.write(data)
    return buf.getvalue()


COMPRESS = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": lambda d: zstandard.ZstdCompressor().compress(d),
    "zip": lambda d: zip_of({"reviews.data": d}),
}
EXT = {"csv": "csv", "tsv": "tsv", "json": "json", "jsonl": "jsonl", "txt": "txt", "parquet": "parquet"}
KIND = {"gz": "gzip", "bz2": "bzip2", "xz": "xz", "zst": "zstd", "zip": "zip"}


def assert_rows(ds, fmt):
    assert ds.df["text"].tolist() == TEXTS
    if fmt != "txt":
        assert ds.df["label"].tolist() == LABELS


@pytest.mark.parametrize("comp", sorted(COMPRESS))
@pytest.mark.parametrize("fmt", sorted(EXT))
def test_every_format_in_every_compression(tmp_path, fmt, comp):
    packed = COMPRESS[comp](content_of(fmt))
    assert packed != content_of(fmt)
    ds = load(write(tmp_path / f"reviews.{EXT[fmt]}.{comp}", packed), text="text")
    assert_rows(ds, fmt)
    assert ds.report[0].detail["compression"] == KIND[comp] and ds.report[0].detail["format"] == fmt


@pytest.mark.parametrize("comp", sorted(COMPRESS))
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_compression_is_found_from_the_bytes_when_the_name_does_not_say(tmp_path, fmt, comp):
    ds = load(write(tmp_path / f"reviews.{EXT[fmt]}", COMPRESS[comp](content_of(fmt))), text="text")
    assert_rows(ds, fmt)
    assert ds.report[0].detail["compression"] == KIND[comp]


def test_the_bytes_win_when_the_name_lies(tmp_path):
    ds = load(write(tmp_path / "reviews.csv.gz", bz2.compress(content_of("csv"))), text="text")
    assert_rows(ds, "csv")
    assert ds.report[0].detail["compression"] == "bzip2"
    plain = load(write(tmp_path / "reviews.jsonl.zst", content_of("jsonl")), text="text")
    assert_rows(plain, "jsonl")
    assert plain.report[0].detail["compression"] is None
    uncompressed = load(write(tmp_path / "reviews.csv", content_of("csv")), text="text")
    assert uncompressed.report[0].detail["compression"] is None


def test_zstd_without_content_size_and_with_several_frames(tmp_path):
    lines = [json.dumps({"text": f"row {i}"}) + "\n" for i in range(4)]
    frames = b"".join(zstd_streamed("".join(lines[k:k + 2]).encode()) for k in (0, 2))
    assert load(write(tmp_path / "d.jsonl.zst", frames)).df["text"].tolist() == [f"row {i}" for i in range(4)]


def test_zip_member_name_gives_the_format_and_macos_extras_are_ignored(tmp_path):
    data = zip_of({"export/reviews.jsonl": content_of("jsonl"), "__MACOSX/export/._reviews.jsonl": b"\x00\x05",
                   "export/.DS_Store": b"\x00\x00\x00\x01Bud1"})
    ds = load(write(tmp_path / "archive.zip", data), text="text")
    assert_rows(ds, "jsonl")
    assert ds.report[0].detail["format"] == "jsonl"


def test_errors_in_compressed_files_keep_their_line_and_column(tmp_path):
    bad_csv = b"text,label\ngood,pos\ntoo, many, fields,neg\nok,pos\n"
    raises(write(tmp_path / "reviews.csv.gz", gzip.compress(bad_csv)), ["line 3", "column 10", "expected 2 fields"],
           text="text")
    bad_jsonl = b'{"text": "a"}\n{"text": "b",}\n'
    raises(write(tmp_path / "data.jsonl.xz", lzma.compress(bad_jsonl)), ["line 2, column", "invalid JSON"])
    raises(write(tmp_path / "data.json.zst", zstandard.ZstdCompressor().compress(b'[\n  {"text": "b" "c"}\n]')),
           ["line 2, column 16", "invalid JSON"])
    msg = raises(write(tmp_path / "data.zip", zip_of({"inner.jsonl": bad_jsonl})), ["line 2, column", "invalid JSON"])
    assert "data.zip (inner.jsonl), line 2" in msg
    raises(write(tmp_path / "latin.csv.bz2", bz2.compress("text\ncaf\xe9\n".encode("latin-1"))),
           ["line 2, byte 4", "encoding='latin-1'"])


@pytest.mark.parametrize("comp", sorted(COMPRESS))
def test_a_file_cut_short_is_a_clear_error(tmp_path, comp):
    packed = COMPRESS[comp](content_of("jsonl") * 50)
    path = write(tmp_path / f"cut.jsonl.{comp}", packed[: len(packed) // 2])
    msg = raises(path, ["damaged or cut short", KIND[comp], "get it again"])
    assert "Traceback" not in msg and len(msg) < 400


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    packed = bytearray(gzip.compress(content_of("csv") * 20))
    packed[len(packed) // 2:len(packed) // 2 + 8] = b"\xff" * 8  # damage inside the deflate stream
    raises(write(tmp_path / "reviews.csv.gz", bytes(packed)), ["damaged or cut short", "gzip"])
    wrong_crc = bytearray(gzip.compress(content_of("csv")))
    wrong_crc[-8] ^= 0xFF  # the trailer's CRC-32
    raises(write(tmp_path / "crc.csv.gz", bytes(wrong_crc)), ["damaged or cut short", "gzip"])
    not_gzip = write(tmp_path / "noise.csv.gz", b"\x00\x01garbage\x00" * 10)
    raises(not_gzip, ["does not start with the gzip signature", "damaged or not gzip-compressed"])


def test_a_zip_must_hold_exactly_one_file(tmp_path):
    two = write(tmp_path / "two.zip", zip_of({"train.csv": content_of("csv"), "val.csv": content_of("csv")}))
    msg = raises(two, ["holds 2 files", "'train.csv'", "'val.csv'", "exactly one", "unzip"])
    assert "extract the one you want" in msg
    many = write(tmp_path / "many.zip", zip_of({f"part{i}.csv": b"text\nx\n" for i in range(8)}))
    raises(many, ["holds 8 files", "'part0.csv'", "and 3 more"])
    empty = write(tmp_path / "empty.zip", zip_of({}))
    raises(empty, ["holds no files"])
    folders = write(tmp_path / "folders.zip", zip_of({"a/": b"", "a/b/": b""}))
    raises(folders, ["holds no files", "2 folder entries"])


def test_office_documents_and_tar_archives_are_named(tmp_path):
    xlsx = zip_of({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>",
                   "xl/worksheets/sheet1.xml": b"<worksheet/>"})
    raises(write(tmp_path / "reviews.xlsx", xlsx), ["Excel", "save the sheet as CSV"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("reviews.csv")
        info.size = len(content_of("csv"))
        tar.addfile(info, io.BytesIO(content_of("csv")))
    raises(write(tmp_path / "reviews.csv.gz", gzip.compress(buf.getvalue())), ["tar archive", "tar xf"])


def test_an_unknown_format_inside_a_compressed_file(tmp_path):
    raises(write(tmp_path / "data.bin.gz", gzip.compress(b"text\nx\n")), ["'.bin'", "inside the gzip file",
                                                                          "format='csv'"])
    assert load(write(tmp_path / "data.gz", gzip.compress(b"text\nx\n")), format="csv").df["text"][0] == "x"


# -- encodings with a byte-order mark ------------------------------------------------------------

BOMS = {
    "utf-8-sig": (codecs.BOM_UTF8, "utf-8"), "utf-16-le": (codecs.BOM_UTF16_LE, "utf-16-le"),
    "utf-16-be": (codecs.BOM_UTF16_BE, "utf-16-be"), "utf-32-le": (codecs.BOM_UTF32_LE, "utf-32-le"),
    "utf-32-be": (codecs.BOM_UTF32_BE, "utf-32-be"),
}


@pytest.mark.parametrize("enc", sorted(BOMS))
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "txt"])
def test_a_byte_order_mark_picks_the_encoding(tmp_path, fmt, enc):
    bom, codec = BOMS[enc]
    text = content_of(fmt).decode("utf-8").replace("\n", "\r\n")  # as Windows editors save it
    ds = load(write(tmp_path / f"reviews.{fmt}", bom + text.encode(codec)), text="text")
    assert_rows(ds, fmt)
    assert list(ds.df.columns)[0] == "text"  # no BOM left in the first column's name


def test_bom_encoded_file_inside_a_compressed_file_and_its_error_lines(tmp_path):
    data = codecs.BOM_UTF16_LE + content_of("csv").decode().encode("utf-16-le")
    assert_rows(load(write(tmp_path / "reviews.csv.gz", gzip.compress(data)), text="text"), "csv")
    bad = codecs.BOM_UTF16_BE + "text,label\ngood,pos\ntoo, many, fields,neg\n".encode("utf-16-be")
    raises(write(tmp_path / "bad.csv", bad), ["line 3", "column 10", "expected 2 fields"], text="text")
    odd = codecs.BOM_UTF16_LE + "text\nhello\nworld\n".encode("utf-16-le") + b"\x00"
    raises(write(tmp_path / "odd.txt", odd), ["line 4", "not valid utf-16", "re-save it as UTF-8"])
    nul = codecs.BOM_UTF32_LE + "text\nab\x00cd\n".encode("utf-32-le")
    raises(write(tmp_path / "nul.txt", nul), ["line 2, character 3", "NUL", "binary"])
