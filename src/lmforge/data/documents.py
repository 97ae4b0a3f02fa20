"""Documents in and out: the one record type every data step and the tokenizer stage share.

A document is a plain dict `{"id": str, "text": str, "source": str, "metadata": dict}`.
`read_documents` reads every format of `lmforge.data.sources` strictly: bad input stops with a
`DataError` naming the file, the line and what was expected, so a user can fix the record
instead of training on a silently shrunk corpus. Curation, which must count bad records and go
on, uses `sources.iter_sources` instead.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lmforge.artifacts import atomic_write_bytes
from lmforge.data.sources import Malformed, iter_sources
from lmforge.errors import LmforgeError


class DataError(LmforgeError):
    """Input that cannot be read as documents; the message names file, line and expectation."""


def read_documents(paths: str | Path | Iterable[str | Path],
                   text_field: str = "text") -> Iterator[dict[str, Any]]:
    """Yield documents from files, folders (recursively, in sorted path order) and `hf:` datasets.

    Fields other than id/text/source of a record are kept in `metadata`. A single path is
    accepted too (a bare string would otherwise be read as a list of one-letter paths).
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    found = False
    for item in iter_sources(paths, text_field):
        if isinstance(item, Malformed):
            raise DataError(str(item))
        found = True
        yield item
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
