"""Documents in and out: the one record type every data step and the tokenizer stage share.

A document is a plain dict `{"id": str, "text": str, "source": str, "metadata": dict}`.
Inputs are JSONL (plain or gzip, one object per line), `.txt` files (one document each) and
folders of those. Bad input stops with a `DataError` naming the file, the line and what was
expected, so a user can fix the record instead of guessing.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lmforge.artifacts import atomic_write_bytes

SUFFIXES = (".jsonl", ".jsonl.gz", ".txt")
RESERVED = ("id", "source", "metadata")


class DataError(ValueError):
    """Input that cannot be read as documents; the message names file, line and expectation."""


def read_documents(paths: str | Path | Iterable[str | Path],
                   text_field: str = "text") -> Iterator[dict[str, Any]]:
    """Yield documents from files and folders (recursively), in sorted path order.

    Fields other than id/text/source of a JSONL record are kept in `metadata`. A single path
    is accepted too (a bare string would otherwise be read as a list of one-letter paths).
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    found = False
    for path in _expand(paths):
        docs = [_read_txt(path)] if path.name.endswith(".txt") else _read_jsonl(path, text_field)
        for doc in docs:
            found = True
            yield doc
    if not found:
        raise DataError(f"no documents found in {', '.join(map(str, paths)) or '(no paths given)'}")


def write_documents(path: str | Path, docs: Iterable[dict[str, Any]]) -> int:
    """Write documents as JSONL (gzip when `path` ends in .gz) atomically; returns the count.

    The gzip header carries no timestamp, so equal documents give byte-identical files.
    """
    lines = [json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n" for doc in docs]
    data = b"".join(lines)
    atomic_write_bytes(path, gzip.compress(data, mtime=0) if str(path).endswith(".gz") else data)
    return len(lines)


def _expand(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and _is_document_file(p))
        elif path.is_file():
            if not path.name.endswith(SUFFIXES):
                raise DataError(f"{path}: unsupported file type (expected {', '.join(SUFFIXES)})")
            yield path
        else:
            raise DataError(f"{path}: no such file or folder")


def _is_document_file(path: Path) -> bool:
    """Hidden files are skipped: they are temporaries of atomic writes or editor droppings."""
    return path.name.endswith(SUFFIXES) and not path.name.startswith(".")


def _read_txt(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 at byte {err.start}") from None
    return {"id": str(path), "text": text, "source": str(path), "metadata": {}}


def _read_jsonl(path: Path, text_field: str) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    line_no = 0
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                if raw.strip():
                    yield _parse_line(raw, path, line_no, text_field)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}:{line_no + 1}: cannot read ({err})") from None


def _parse_line(raw: bytes, path: Path, line_no: int, text_field: str) -> dict[str, Any]:
    where = f"{path}:{line_no}"
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not valid UTF-8 at byte {err.start} of the line") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    text = record.get(text_field)
    if not isinstance(text, str):
        got = "it is missing" if text_field not in record else f"got {type(text).__name__}"
        raise DataError(f"{where}: expected a string field {text_field!r}, {got}")
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise DataError(f"{where}: expected 'metadata' to be a JSON object, got {type(metadata).__name__}")
    extra = {k: v for k, v in record.items() if k not in RESERVED and k != text_field}
    source = record.get("source")
    return {
        "id": str(record["id"]) if record.get("id") is not None else where,
        "text": text,
        "source": source if isinstance(source, str) else str(path),
        "metadata": {**metadata, **extra},
    }
