"""A data file's bytes and text as people have them: compressed, and in any Unicode encoding with a BOM.

``read_source`` returns the file's content decompressed (gzip, bzip2, xz, zstd, or a zip archive that
holds one file), detected from the name (``reviews.csv.gz``) and, where the name lies or has no
compression suffix, from the first bytes. ``decode_text`` turns those bytes into text: a byte-order
mark (UTF-8, UTF-16 or UTF-32, either byte order) picks the encoding by itself, anything else is
decoded with the encoding asked for, and binary or undecodable content raises a ``DataError`` that
names the file, the line and what to do. Every format reader in ``loading.py`` goes through these two
functions, so compression and encodings are handled once, the same way for every format. The
decompressed bytes are exactly those of the uncompressed file, so errors keep their line and column.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DataError
from .dataset import first_few

COMPRESSIONS: dict[str, str] = {
    ".gz": "gzip", ".gzip": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zip": "zip", ".zst": "zstd", ".zstd": "zstd",
}
_TOOLS = {"gzip": "gzip", "bzip2": "bzip2", "xz": "xz", "zip": "zip", "zstd": "zstd"}
# Formats the content is surely not text in (checked only when no byte-order mark says it is text).
_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"PAR1", "a Parquet file", "pass format='parquet' (or give it a .parquet extension)"),
    (b"PK\x03\x04", "a zip archive (or an Excel .xlsx workbook)", "unzip it, or save the sheet as CSV"),
    (b"\x1f\x8b", "gzip-compressed data inside a compressed file", "decompress the outer layer first"),
    (b"%PDF", "a PDF document", "extract its text first"),
    (b"\x89PNG", "a PNG image", "give a text file"),
    (b"SQLite format 3", "an SQLite database", "export the table as CSV or JSON Lines"),
)
# Longest first: the UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
_NL = b"\n"
_WIDE = ("utf-16", "utf-32")  # encodings in which ASCII text has NUL bytes


@dataclass(frozen=True)
class Source:
    """A file's decompressed content, the names its format can be read from, and how errors name it."""

    data: bytes
    compression: str | None  # "gzip", "bzip2", "xz", "zip", "zstd" or None
    names: tuple[str, ...]  # best first: the zip member, then the file name without its compression suffix
    where: str  # the path, plus the member's name for a zip: "data.zip (reviews.csv)"


def read_source(path: Path, name: str) -> Source:
    """Read ``path`` whole and decompress it if its name or its first bytes say it is compressed."""
    raw = path.read_bytes()
    claimed = COMPRESSIONS.get(path.suffix.lower())
    kind = _sniff(raw)
    plain = path.stem if claimed else path.name
    if kind is None:
        if claimed and b"\x00" in raw[:4096]:
            raise DataError(f"{name}: the name says {claimed}, but the file does not start with the {claimed} "
                            f"signature, so it is damaged or not {claimed}-compressed; compress it again "
                            f"(or download it again), or rename it without {path.suffix!r} if it is not compressed")
        return Source(raw, None, (plain,), name)
    member = None
    if kind == "zip":
        data, member = _unzip(raw, name)
    else:
        data = _decompress(kind, raw, name)
    where = f"{name} ({member})" if member else name
    if data[257:262] == b"ustar":
        raise DataError(f"{where}: this is a tar archive, not a data file; extract it (tar xf {name}) and load "
                        "the data file inside")
    names = (PurePosixPath(member).name, plain) if member else (plain,)
    return Source(data, kind, names, where)


def _sniff(raw: bytes) -> str | None:
    """The compression the first bytes announce, or None."""
    if raw.startswith(b"\x1f\x8b\x08"):
        return "gzip"
    if raw[:3] == b"BZh" and raw[3:4].isdigit() and raw[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bzip2"
    if raw.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if raw.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if raw.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    return None


def _damaged(where: str, kind: str, exc: BaseException) -> DataError:
    detail = str(exc).replace("\n", " ")[:120] or type(exc).__name__
    return DataError(f"{where}: the {kind} data is damaged or cut short ({detail}); the file was probably not "
                     f"copied or downloaded completely: get it again, or check it with `{_TOOLS[kind]} -t`")


def _decompress(kind: str, raw: bytes, name: str) -> bytes:
    if kind == "zstd":
        return _unzstd(raw, name)
    try:
        if kind == "gzip":
            return gzip.decompress(raw)
        if kind == "bzip2":
            return bz2.decompress(raw)
        return lzma.decompress(raw)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as e:
        raise _damaged(name, kind, e) from None


def _unzstd(raw: bytes, name: str) -> bytes:
    """Decompress every zstd frame; a frame cut short is an error, not silently fewer rows."""
    try:
        import zstandard
    except ImportError:
        raise DataError(f"{name} is zstd-compressed and reading it needs the zstandard package: "
                        "pip install zstandard (or decompress it first: zstd -d)") from None
    out = io.BytesIO()
    dctx = zstandard.ZstdDecompressor()
    pos = 0
    try:
        while pos < len(raw):  # one decompressobj per frame: files may hold several frames
            frame = dctx.decompressobj()
            out.write(frame.decompress(raw[pos:]))
            if not frame.eof:
                raise EOFError("the data ends inside a frame")
            pos = len(raw) - len(frame.unused_data)
    except (zstandard.ZstdError, EOFError) as e:
        raise _damaged(name, "zstd", e) from None
    return out.getvalue()


def _unzip(raw: bytes, name: str) -> tuple[bytes, str]:
    """The one data file in a zip archive (folders and macOS ``__MACOSX`` / ``.DS_Store`` extras aside)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise _damaged(name, "zip", e) from None
    with archive:
        infos = archive.infolist()
        files = [i for i in infos if not i.is_dir() and not i.filename.startswith("__MACOSX/")
                 and PurePosixPath(i.filename).name != ".DS_Store"]
        listed = [i.filename for i in files]
        if "[Content_Types].xml" in listed and any(n.startswith(("xl/", "word/", "ppt/")) for n in listed):
            raise DataError(f"{name}, byte 0: this is an Office document (e.g. an Excel .xlsx workbook), not a "
                            "zip of data; save the sheet as CSV (CSV UTF-8) and load that file")
        if not files:
            raise DataError(f"{name}: the zip archive holds no files ({len(infos)} folder entries); "
                            "zip the data file itself, or load the uncompressed file")
        if len(files) > 1:
            shown = first_few([repr(n) for n in listed], ", ")
            raise DataError(f"{name}: the zip archive holds {len(files)} files ({shown}), and aigc-lab "
                            "reads a zip that holds exactly one data file; extract the one you want "
                            f"(unzip {name} {listed[0]!r}) and load that file, or zip it alone")
        info = files[0]
        where = f"{name} ({info.filename})"
        if info.flag_bits & 0x1:
            raise DataError(f"{where}: the file in the zip archive is password-protected; extract it with its "
                            "password and load the extracted file")
        try:
            return archive.read(info), info.filename
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zlib.error,
                lzma.LZMAError) as e:
            raise _damaged(where, "zip", e) from None


def decode_text(raw: bytes, where: str, encoding: str, fmt: str) -> str:
    """Decode a text file: its byte-order mark wins over the default UTF-8; lines end in ``\\n``.

    An encoding other than UTF-8 that the caller asked for is used as given (a leading BOM character
    is dropped). Binary content and bytes invalid in the encoding raise ``DataError`` with the line.
    """
    try:
        enc = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"{where}: unknown encoding {encoding!r}; use e.g. 'utf-8', 'latin-1' or 'cp1252'") from None
    bom = next((e for mark, e in _BOMS if raw.startswith(mark)), None)
    said = encoding
    if enc in ("utf-8", "utf-8-sig"):
        enc = bom or "utf-8-sig"  # utf-8-sig accepts a UTF-8 BOM and strips it
        said = f"{enc} (as its byte-order mark says)" if bom and bom != "utf-8-sig" else encoding
    wide = enc.startswith(_WIDE)
    _check_not_binary(raw, where, fmt, wide)
    try:
        content = raw.decode(enc)
    except UnicodeDecodeError as e:
        prefix = raw[:e.start].decode(enc, errors="replace")
        line = prefix.count("\n") + 1
        place = f"line {line}"
        if not wide:
            place += f", byte {e.start - raw.rfind(_NL, 0, e.start)}"
        bad = raw[e.start:e.end]
        hint = ("re-save it as UTF-8" if wide
                else "pass encoding='latin-1' (or 'cp1252' for Windows files), or re-save it as UTF-8"
                if enc.startswith("utf") else "pass the encoding the file was saved in (e.g. encoding='utf-8')")
        raise DataError(f"{where}, {place} (offset {e.start}): the bytes {bad!r} are not valid {said} "
                        f"({e.reason}); the file was saved in another encoding or is damaged: {hint}") from None
    content = content.removeprefix("\ufeff")
    nul = content.find("\x00") if wide else -1
    if nul >= 0:
        line = content.count("\n", 0, nul) + 1
        col = nul - (content.rfind("\n", 0, nul) + 1) + 1
        raise DataError(f"{where}, line {line}, character {col}: a NUL character, so this is a binary file, not "
                        f"{fmt} text; give a text file (or pass the right format=, e.g. format='parquet')")
    return content.replace("\r\n", "\n").replace("\r", "\n")


def _check_not_binary(raw: bytes, where: str, fmt: str, wide: bool) -> None:
    for magic, what, todo in _MAGIC:
        if raw.startswith(magic):
            raise DataError(f"{where}, byte 0: this is {what}, not {fmt} text; {todo}")
    nul = -1 if wide else raw.find(b"\x00")
    if nul < 0:
        return
    line = raw.count(b"\n", 0, nul) + 1
    col = nul - (raw.rfind(b"\n", 0, nul) + 1) + 1
    utf16 = _utf16_without_bom(raw)
    todo = (f"it looks like {utf16.upper()} text without a byte-order mark: pass encoding={utf16!r}, or re-save "
            "it as UTF-8" if utf16 else
            "give a text file (or pass the right format=, e.g. format='parquet')")
    raise DataError(f"{where}, line {line}, byte {col} (offset {nul}): a NUL byte, so this is a binary file, "
                    f"not {fmt} text; {todo}")


def _utf16_without_bom(raw: bytes) -> str | None:
    """'utf-16-le' / 'utf-16-be' when NUL bytes sit on one side of (nearly) every byte pair, as in ASCII text."""
    sample = raw[:4096]
    even, odd = sample[0::2], sample[1::2]
    if len(odd) < 2:
        return None
    if odd.count(0) >= 0.3 * len(odd) and even.count(0) <= 0.02 * len(even):
        return "utf-16-le"
    if even.count(0) >= 0.3 * len(even) and odd.count(0) <= 0.02 * len(odd):
        return "utf-16-be"
    return None
