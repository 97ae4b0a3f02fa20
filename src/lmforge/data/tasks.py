"""Labelled examples for fine-tuning: text + label rows (TSV, CSV, JSONL) and CoNLL token tags.

Readers are strict by default: every malformed row is collected first and then reported in one
`DataError` naming the file, the line numbers and what was expected, so a user fixes the whole
file at once instead of one error per run. With `skip_malformed=True` a reader returns
`(examples, bad_line_numbers)` instead, for callers that accept losing a few rows but must
say how many. Line numbers are 1-based, as editors count; a CSV row spanning lines is reported
at its first line. Any file may be gzipped (`.tsv.gz`, ...).
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, TypeVar, overload

from lmforge.data.documents import DataError
from lmforge.errors import READ_ERRORS, unreadable

T = TypeVar("T")
Column = str | int
Bad = list[tuple[int, str]]
Row = tuple[int, tuple[str, str] | str]  # (first line, (text, label) or what was wrong)


@dataclass
class TextExample:
    """A text and its class label, for sequence classification and labelled retrieval."""

    text: str
    label: str


@dataclass
class TaggedExample:
    """One sentence for token classification: tokens and their BIO tags, index-aligned."""

    tokens: list[str]
    tags: list[str]


@overload
def read_text_labels(path: str | Path, text_column: Column = ..., label_column: Column = ...,
                     skip_malformed: Literal[False] = ...) -> list[TextExample]: ...
@overload
def read_text_labels(path: str | Path, text_column: Column = ..., label_column: Column = ...,
                     *, skip_malformed: Literal[True]) -> tuple[list[TextExample], list[int]]: ...
def read_text_labels(path: str | Path, text_column: Column = "text", label_column: Column = "label",
                     skip_malformed: bool = False) -> list[TextExample] | tuple[list[TextExample], list[int]]:
    """Read `(text, label)` examples from a `.tsv`, `.csv` or `.jsonl` file (optionally `.gz`).

    Columns are chosen by header name; integer positions read a header-less TSV/CSV (AG News
    has no header). Texts and labels are stripped (SST-2 sentences end in a space); a row with
    an empty text or label is malformed, as training on it would teach nothing.
    """
    path = Path(path)
    kind = path.name.removesuffix(".gz").rsplit(".", 1)[-1]
    if kind == "jsonl":
        if not (isinstance(text_column, str) and isinstance(label_column, str)):
            raise DataError(f"{path.name}: JSONL fields are chosen by name, not position")
        rows = _jsonl_rows(path, text_column, label_column)
    elif kind in ("tsv", "csv"):
        rows = _delimited_rows(path, kind, text_column, label_column)
    else:
        raise DataError(f"{path.name}: unknown labelled-data format (expected .tsv, .csv or .jsonl)")
    examples, bad = [], []
    with _reading(path, f"a {kind.upper()} file of texts and labels"):
        for line, row in rows:
            if isinstance(row, str):
                bad.append((line, row))
            elif not row[0].strip() or not row[1].strip():
                bad.append((line, "empty text or label"))
            else:
                examples.append(TextExample(row[0].strip(), row[1].strip()))
    return _finish(path, examples, bad, skip_malformed)


@overload
def read_conll(path: str | Path, skip_malformed: Literal[False] = ...) -> list[TaggedExample]: ...
@overload
def read_conll(path: str | Path, *,
               skip_malformed: Literal[True]) -> tuple[list[TaggedExample], list[int]]: ...
def read_conll(path: str | Path,
               skip_malformed: bool = False) -> list[TaggedExample] | tuple[list[TaggedExample], list[int]]:
    """Read CoNLL sentences: `token<TAB>tag` lines (or space-separated; the tag is the last field).

    Sentences end at a line that is empty or only whitespace (WNUT-17 train uses a lone TAB);
    `-DOCSTART-` lines are skipped. A skipped malformed line drops its whole sentence, since a
    sentence missing a token would teach broken spans.
    """
    path = Path(path)
    examples, bad = [], []
    tokens, tags, broken = [], [], False
    with _reading(path, "a CoNLL file of tokens and tags"), _open(path) as f:
        for number, line in enumerate(itertools.chain(f, [""]), 1):  # "" closes the last sentence
            if not line.strip():
                if tokens and not broken:
                    examples.append(TaggedExample(tokens, tags))
                tokens, tags, broken = [], [], False
                continue
            if line.startswith("-DOCSTART-"):
                continue
            fields = [field.strip() for field in line.split("\t")] if "\t" in line else line.split()
            if len(fields) < 2 or not fields[0] or not fields[-1]:
                bad.append((number, "expected a token and a tag"))
                broken = True
            else:
                tokens.append(fields[0])
                tags.append(fields[-1])
    return _finish(path, examples, bad, skip_malformed)


def infer_labels(examples: Sequence[TextExample] | Sequence[TaggedExample]) -> list[str]:
    """The sorted label set of `examples`, so label ids do not depend on row order.

    For tagged examples it is `O` then `B-type, I-type` for every entity type seen: a type whose
    I- tag is missing from training (one-token entities only) must still get an id, or a model
    could never predict a longer entity of it.
    """
    if not examples or isinstance(examples[0], TextExample):
        return sorted({example.label for example in examples})
    tags = {tag for example in examples for tag in example.tags}
    not_bio = sorted(tag for tag in tags if tag != "O" and tag[:2] not in ("B-", "I-"))
    if not_bio:
        raise DataError(f"tags are not BIO: {', '.join(not_bio[:5])}")
    types = sorted({tag[2:] for tag in tags if tag != "O"})
    return ["O"] + [f"{prefix}-{kind}" for kind in types for prefix in "BI"]


def encode(labels: Sequence[str], label_set: Sequence[str]) -> list[int]:
    """Label ids for `labels`; a label outside `label_set` (e.g. dev-only) is an error, not a new id."""
    ids = {label: i for i, label in enumerate(label_set)}
    unknown = sorted(set(labels) - ids.keys())
    if unknown:
        raise DataError(f"labels not in the label set: {', '.join(unknown[:10])}")
    return [ids[label] for label in labels]


@contextmanager
def _reading(path: Path, expected: str) -> Iterator[None]:
    """Turn a file that cannot be read (missing, a folder, not UTF-8, a broken gzip or CSV
    stream) into a `DataError` naming it: readers open files lazily, inside their loops."""
    try:
        yield
    except READ_ERRORS as err:
        raise DataError(unreadable(path, err, expected)) from None
    except csv.Error as err:
        raise DataError(f"{path}: {err} (expected {expected})") from None


def _open(path: Path) -> IO[str]:
    """Text stream with newlines untranslated, as the csv module needs for quoted multi-line fields."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _delimited_rows(path: Path, kind: str, text_column: Column, label_column: Column) -> Iterator[Row]:
    """Each TSV/CSV row with its first line number; a row whose field count differs is an error.

    The width is the header's, or the first row's in a header-less file: a stray delimiter in one
    text would otherwise shift its label silently. TSV fields are never quoted (SST-2 texts
    contain bare quotes); CSV fields may be.
    """
    delimiter, quoting = ("\t", csv.QUOTE_NONE) if kind == "tsv" else (",", csv.QUOTE_MINIMAL)
    name = "tab-separated" if kind == "tsv" else "comma-separated"
    with _open(path) as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        if isinstance(text_column, int) and isinstance(label_column, int):
            width, text_at, label_at = None, text_column, label_column
        else:
            header = next(reader, [])
            if not header:
                raise DataError(f"{path.name}: no header row (expected a first line naming the columns "
                                f"{text_column!r} and {label_column!r})")
            width = len(header)
            text_at = _column_index(path, header, text_column)
            label_at = _column_index(path, header, label_column)
        line = reader.line_num + 1
        for fields in reader:
            if fields:
                width = width or max(len(fields), text_at + 1, label_at + 1)
                ok = len(fields) == width
                yield line, (fields[text_at], fields[label_at]) if ok else f"expected {width} {name} columns"
            line = reader.line_num + 1


def _column_index(path: Path, header: list[str], column: Column) -> int:
    """Position of the named `column`; positions are for header-less files only, so no mixing."""
    if isinstance(column, int):
        raise DataError(f"{path.name}: give both columns by name or both by position, not a mix")
    if column not in header:
        raise DataError(f"{path.name}: no column {column!r} in header {header}")
    return header.index(column)


def _jsonl_rows(path: Path, text_field: str, label_field: str) -> Iterator[Row]:
    """`(line, text, label)` per JSON line; numeric labels become strings (`1` and `"1"` alike)."""
    with _open(path) as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                yield line, "expected a JSON object"
                continue
            text = record.get(text_field) if isinstance(record, dict) else None
            label = record.get(label_field) if isinstance(record, dict) else None
            if not isinstance(text, str) or not isinstance(label, (str, int)) or isinstance(label, bool):
                yield line, f"expected a string {text_field!r} and a string or integer {label_field!r}"
            else:
                yield line, (text, str(label))


def _finish(path: Path, examples: list[T], bad: Bad,
            skip_malformed: bool) -> list[T] | tuple[list[T], list[int]]:
    """Apply the strict/lenient contract of the module docstring."""
    if skip_malformed:
        return examples, [line for line, _ in bad]
    if bad:
        raise DataError(_describe(path, bad))
    if not examples:
        raise DataError(f"{path.name}: no examples")
    return examples


def _describe(path: Path, bad: Bad) -> str:
    """'bad.tsv: 2 malformed rows (lines 4, 9): expected 2 tab-separated columns', one part per error."""
    by_error: dict[str, list[int]] = defaultdict(list)
    for line, error in bad:
        by_error[error].append(line)
    parts = []
    for error, lines in by_error.items():
        shown = ", ".join(map(str, lines[:20])) + (", ..." if len(lines) > 20 else "")
        parts.append(f"{len(lines)} malformed row{'s' * (len(lines) > 1)} "
                     f"(line{'s' * (len(lines) > 1)} {shown}): {error}")
    return f"{path.name}: " + "; ".join(parts)
