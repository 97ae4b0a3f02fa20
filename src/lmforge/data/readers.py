"""Readers for curation: every source format as one stream of documents and `Malformed` records.

Curation must account for every input record, so bad input does not stop it: each unreadable
record (or the unread rest of a damaged file) becomes one `Malformed` naming the file, the place
and what was expected, and reading goes on. `read_documents` in `documents.py` is the strict
variant the tokenizer stage uses.

Document ids, when the source gives none, say where a record came from: `file:LINE` (1-based, as
editors count lines) for JSONL, `file#N` (0-based position) for Parquet rows, dataset rows and
web-archive records. The Parquet, datasets and web-archive libraries load on first use: together
they take about 1.5 s to import, which every `lmforge` command would pay otherwise.
"""

from __future__ import annotations

import functools
import gzip
import json
import socket
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import zstandard

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz")  # dolma's *.json.gz files are JSONL
WEB_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz", ".wet", ".wet.gz")
SUFFIXES = (*JSONL_SUFFIXES, ".parquet", ".txt", *WEB_SUFFIXES)
RESERVED = ("id", "source", "metadata")
READ_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)  # what a damaged file raises
CHUNK = 1 << 20


@dataclass(frozen=True)
class Malformed:
    """An input record that is not a document; `location` is "line 12", "row 3", "offset 3456" or ""."""

    source: str
    location: str
    error: str

    def __str__(self) -> str:
        """`file:12: error` for a line, the form editors jump to; `file (row 3): error` otherwise."""
        if self.location.startswith("line "):
            return f"{self.source}:{self.location.removeprefix('line ')}: {self.error}"
        where = f" ({self.location})" if self.location else ""
        return f"{self.source}{where}: {self.error}"


Item = dict[str, Any] | Malformed


def iter_sources(paths: str | Path | Iterable[str | Path], text_field: str = "text") -> Iterator[Item]:
    """Yield the documents of files, folders and `hf:` datasets, and a `Malformed` for each bad record.

    The format follows the file name (see `SUFFIXES`). Folders are read recursively in sorted
    order, skipping hidden entries and unknown file types; a path given directly must have a
    known type. Empty files hold no documents. A web page whose main text trafilatura cannot find
    is yielded with empty text rather than as `Malformed`: its record is sound, and the length and
    quality steps then remove it with a reason that says so.
    """
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        if str(path).startswith("hf:"):
            yield from _read_hf(str(path), text_field)
        else:
            yield from _read_path(Path(path), text_field)


def decompressed_lines(path: Path) -> Iterator[bytes]:
    """Lines of a plain, .gz or .zst file without their newline.

    A file cut off mid-way raises one of `READ_ERRORS` after its last whole line, so a reader
    keeps everything before the break.
    """
    rest = b""
    for chunk in _chunks(path):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def error_line(err: BaseException) -> str:
    """The first line of an exception's message: some libraries explain an error over ten lines."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _read_path(path: Path, text_field: str) -> Iterator[Item]:
    if path.is_dir():
        for file in _files_under(path):
            yield from _read_file(file, text_field)
    elif not path.is_file():
        yield Malformed(str(path), "", "no such file or folder")
    elif _reader_for(path) is None:
        yield Malformed(str(path), "", f"unsupported file type (expected {', '.join(SUFFIXES)})")
    else:
        yield from _read_file(path, text_field)


def _files_under(folder: Path) -> list[Path]:
    """Hidden entries are skipped: temporaries of atomic writes, caches, editor droppings."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and _reader_for(p) is not None
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _read_file(path: Path, text_field: str) -> Iterator[Item]:
    """Readers report damaged content themselves; a file that cannot be opened at all is reported here."""
    try:
        if path.stat().st_size > 0:
            yield from _reader_for(path)(path, text_field)
    except OSError as err:
        yield Malformed(str(path), "", f"cannot read ({err})")


def _reader_for(path: Path) -> Callable[[Path, str], Iterator[Item]] | None:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return _read_jsonl
    if name.endswith(".parquet"):
        return _read_parquet
    if name.endswith(".txt"):
        return _read_txt
    return _read_web if name.endswith(WEB_SUFFIXES) else None


def _read_jsonl(path: Path, text_field: str) -> Iterator[Item]:
    line_no = 0
    try:
        for line_no, line in enumerate(decompressed_lines(path), start=1):
            if line.strip():
                yield _parse_line(line, path, line_no, text_field)
    except READ_ERRORS as err:
        yield Malformed(str(path), f"line {line_no + 1}", f"cannot read ({err})")


def _parse_line(line: bytes, path: Path, line_no: int, text_field: str) -> Item:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        return Malformed(str(path), f"line {line_no}", f"not valid UTF-8 at byte {err.start} of the line")
    except json.JSONDecodeError as err:
        return Malformed(str(path), f"line {line_no}", f"malformed JSON ({err.msg} at column {err.colno})")
    return _record_item(record, f"{path}:{line_no}", str(path), f"line {line_no}", text_field)


def _record_item(record: Any, default_id: str, source: str, location: str, text_field: str) -> Item:
    """A JSONL, Parquet or datasets record as a document; fields other than id/text/source go to metadata."""
    bad = functools.partial(Malformed, source, location)
    if not isinstance(record, dict):
        return bad(f"expected a JSON object, got {type(record).__name__}")
    text = record.get(text_field)
    if not isinstance(text, str):
        return bad(f"expected a string field {text_field!r}, "
                   + ("it is missing" if text_field not in record else f"got {type(text).__name__}"))
    metadata = {} if record.get("metadata") is None else record["metadata"]
    if not isinstance(metadata, dict):
        return bad(f"expected 'metadata' to be a JSON object, got {type(metadata).__name__}")
    extra = {k: v for k, v in record.items() if k not in RESERVED and k != text_field}
    return {
        "id": default_id if record.get("id") is None else str(record["id"]),
        "text": text,
        "source": record["source"] if isinstance(record.get("source"), str) else source,
        "metadata": {**metadata, **extra},
    }


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    """Parquet and datasets rows may hold dates, decimals or bytes; documents are written as JSON."""
    return json.loads(json.dumps(record, default=str))


def _read_txt(path: Path, _text_field: str) -> Iterator[Item]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        yield Malformed(str(path), "", f"not valid UTF-8 at byte {err.start}")
        return
    yield {"id": str(path), "text": text, "source": str(path), "metadata": {}}


def _read_parquet(path: Path, text_field: str) -> Iterator[Item]:
    import pyarrow
    import pyarrow.parquet

    row = 0
    try:
        table = pyarrow.parquet.ParquetFile(path)
        if text_field not in table.schema_arrow.names:
            yield _missing_column(str(path), text_field, table.schema_arrow.names)
            return
        for batch in table.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                yield _record_item(_jsonable(record), f"{path}#{row}", str(path), f"row {row}", text_field)
                row += 1
    except (OSError, pyarrow.ArrowException) as err:
        yield Malformed(str(path), f"row {row}", f"cannot read Parquet ({err})")


def _read_hf(spec: str, text_field: str) -> Iterator[Item]:
    """`hf:FOLDER[@SPLIT]` is a `save_to_disk` folder, `hf:NAME[:CONFIG][@SPLIT]` a Hub dataset.

    The split defaults to train. Any failure to load is one `Malformed` naming the dataset.
    """
    target, _, split = spec.removeprefix("hf:").partition("@")
    try:
        dataset = _load_hf(target, split or "train")
    except Exception as err:  # network, format, missing split...: datasets has no common error class
        yield Malformed(spec, "", f"cannot load dataset {target!r} ({error_line(err)})")
        return
    if text_field not in dataset.column_names:
        yield _missing_column(spec, text_field, dataset.column_names)
        return
    for row, record in enumerate(dataset):
        yield _record_item(_jsonable(record), f"{spec}#{row}", spec, f"row {row}", text_field)


def _load_hf(target: str, split: str) -> Any:
    import datasets
    from huggingface_hub import constants

    if Path(target).is_dir():
        loaded = datasets.load_from_disk(target)
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    if not constants.HF_HUB_OFFLINE and not _resolves(urlparse(constants.ENDPOINT).hostname or ""):
        # load_dataset would retry an unreachable Hub for half a minute, logging every attempt
        raise ConnectionError(f"{constants.ENDPOINT} is unreachable; set HF_HUB_OFFLINE=1 to use the cache")
    name, _, config = target.partition(":")
    return datasets.load_dataset(name, config or None, split=split)


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _missing_column(source: str, text_field: str, columns: list[str]) -> Malformed:
    return Malformed(source, "", f"expected a text column {text_field!r}, columns are {', '.join(columns)}")


def _read_web(path: Path, _text_field: str) -> Iterator[Item]:
    from lmforge.data import readers_web

    is_wet = path.name.lower().endswith((".wet", ".wet.gz"))
    return readers_web.read_wet(path) if is_wet else readers_web.read_warc(path)


def _chunks(path: Path) -> Iterator[bytes]:
    """Decompressed pieces of a file. `read1` hands over every byte decoded before a gzip break."""
    with open(path, "rb") as handle:
        if path.name.lower().endswith(".zst"):
            yield from _zstd_chunks(handle)
        else:
            stream = gzip.GzipFile(fileobj=handle) if path.name.lower().endswith(".gz") else handle
            yield from iter(functools.partial(stream.read1, CHUNK), b"")


def _zstd_chunks(handle: BinaryIO) -> Iterator[bytes]:
    """Frame by frame, because zstandard's stream reader ends quietly at a cut-off frame."""
    zstd = zstandard.ZstdDecompressor()
    frame, in_frame = zstd.decompressobj(), False
    while data := handle.read(CHUNK):
        while data:
            yield frame.decompress(data)
            in_frame = not frame.eof
            if in_frame:
                break
            data, frame = frame.unused_data, zstd.decompressobj()
    if in_frame:
        raise EOFError("zstd file ended in the middle of a frame")
