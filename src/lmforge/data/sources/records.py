"""Record-shaped sources: JSONL (plain, .gz, .zst), Parquet, Hugging Face datasets, and .txt files.

A JSONL line, a Parquet row or a dataset row becomes a document whose text is the `text_field`
and whose other fields (but id and source) go to `metadata`. Ids, when the source gives none,
say where a record came from: `file:LINE` (1-based, as editors count lines) for JSONL,
`file#N` (0-based position) for Parquet and dataset rows. pyarrow and datasets load on first
use: they take about a second to import, which every `lmforge` command would pay otherwise.
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lmforge.data.sources.base import READ_ERRORS, Item, Malformed, decompressed_lines, error_line

RESERVED = ("id", "source", "metadata")


def read_jsonl(path: Path, text_field: str) -> Iterator[Item]:
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


def read_txt(path: Path, _text_field: str) -> Iterator[Item]:
    """The whole file is one document, its path the id."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        yield Malformed(str(path), "", f"not valid UTF-8 at byte {err.start}")
        return
    yield {"id": str(path), "text": text, "source": str(path), "metadata": {}}


def read_parquet(path: Path, text_field: str) -> Iterator[Item]:
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


def read_hf(spec: str, text_field: str) -> Iterator[Item]:
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
