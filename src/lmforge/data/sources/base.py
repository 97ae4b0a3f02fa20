"""What every reader shares: the `Malformed` record, the reader signature and decompression.

Curation must account for every input record, so bad input does not stop a reader: each
unreadable record (or the unread rest of a damaged file) becomes one `Malformed` naming the
file, the place and what was expected, and reading goes on.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

READ_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)
"""What a damaged (cut-off, corrupted) file raises while it is decompressed or read."""
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
"""A document `{"id", "text", "source", "metadata"}`, or a record that could not be one."""
Reader = Callable[[Path, str], Iterator[Item]]
"""reader(path, text_field): the items of one file, in file order."""


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
