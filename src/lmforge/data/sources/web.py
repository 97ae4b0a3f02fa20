"""Web archives as documents: HTML pages of WARC/ARC files, extracted text of WET files.

A WARC `response` (or `resource`) record holding HTML becomes one document whose text is the
page's main text, found by trafilatura favouring precision, as FineWeb sets it, and leaving
out comments and tables. Requests, metadata, revisits, warcinfo and non-HTML payloads are not documents and
are skipped, not counted as malformed. A WET `conversion` record becomes a document with its
text as is. Metadata keeps url, warc_record_id (None in ARC files, which have none), date and
content_type.

A damaged archive yields its readable records, then one `Malformed` with the offset (in the
decompressed stream) of the record where reading broke, and the next file is read. warcio and
trafilatura load on first use (0.4 s of imports that no other source needs).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from lmforge.data.sources.base import READ_ERRORS, Item, Malformed, decompressed_lines, error_line

if TYPE_CHECKING:
    from warcio.recordloader import ArcWarcRecord

# WHATWG Encoding Standard: browsers decode these labels with the wider codec, and pages rely on it.
CHARSET_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "iso-8859-1": "cp1252", "latin1": "cp1252"}
META_CHARSET = re.compile(rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
HEADER_CHARSET = re.compile(rb"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
RECORD_END = re.compile(rb"\r?\n\r?\n\Z")  # the blank lines closing a record: CRLF, or LF by hand


def read_warc(path: Path, _text_field: str = "text") -> Iterator[Item]:
    """Yield a document per HTML page of a WARC or ARC file (plain or gzipped)."""
    from warcio.archiveiterator import ArchiveIterator

    is_arc = path.name.lower().endswith((".arc", ".arc.gz"))
    with open(path, "rb") as handle:
        stream = _GzipStream(handle) if path.name.lower().endswith(".gz") else handle
        records = ArchiveIterator(stream, arc2warc=True)
        try:
            for record_no, record in enumerate(records):
                item = _warc_item(record, f"{path}#{record_no}", str(path), records.offset, is_arc)
                if item is not None:
                    yield item
        except Exception as err:  # warcio raises anything from ArchiveLoadFailed to AttributeError on damage
            yield Malformed(str(path), f"offset {records.offset}", f"cannot read ({error_line(err)})")


class _GzipStream:
    """A gzipped archive as one decompressed stream, for warcio.

    warcio reads a .warc.gz gzip member by member, as replay tools must, and so refuses a file
    gzipped whole or with a record split across members; the records in such files are sound, and
    a corpus wants them. A cut-off file must not pass unseen: `read1` hands over every byte decoded
    before the break, and the break is raised as OSError, because warcio takes EOFError for the
    archive's normal end.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._gzip = gzip.GzipFile(fileobj=handle)

    def read(self, size: int = -1) -> bytes:
        try:
            return self._gzip.read1(size)
        except EOFError as err:
            raise OSError(f"gzip stream cut off: {err}") from None

    def tell(self) -> int:
        return self._gzip.tell()


def _warc_item(record: ArcWarcRecord, doc_id: str, source: str, offset: int, is_arc: bool) -> Item | None:
    if record.rec_type not in ("response", "resource"):
        return None
    headers = record.http_headers or record.rec_headers  # a resource record has no HTTP headers
    content_type = headers.get_header("Content-Type") or ""
    if "html" not in content_type.lower():
        return None
    payload = record.content_stream().read()
    missing = _missing_bytes(record)
    if missing:
        return Malformed(source, f"offset {offset}", f"record cut off: {missing} of its {record.length} "
                         "bytes are missing")
    import trafilatura

    url = record.rec_headers.get_header("WARC-Target-URI")
    text = trafilatura.extract(_decode(payload, content_type), url=url, include_comments=False,
                               include_tables=False, favor_precision=True)
    record_id = None if is_arc else record.rec_headers.get_header("WARC-Record-ID")
    return _web_document(doc_id, text or "", source, url, record_id,
                         record.rec_headers.get_header("WARC-Date"), content_type)


def _missing_bytes(record: ArcWarcRecord) -> int:
    """Bytes the record's Content-Length announced that the file does not hold."""
    while record.raw_stream.read(1 << 16):
        pass
    return getattr(record.raw_stream, "limit", 0)  # no limit when the record had no usable Content-Length


def _decode(payload: bytes, content_type: str) -> str | bytes:
    """Decode by the charset the page declares (HTTP header, then <meta>).

    Undeclared or unknown charsets are left to trafilatura's own detection, which is a guess: it
    reads many GBK pages as Latin text.
    """
    declared = (HEADER_CHARSET.search(content_type.encode("latin-1", errors="replace"))
                or META_CHARSET.search(payload[:4096]))
    if declared is None:
        return payload
    charset = declared.group(1).decode("ascii").lower()
    try:
        return payload.decode(CHARSET_ALIASES.get(charset, charset), errors="replace")
    except LookupError:
        return payload


def read_wet(path: Path, _text_field: str = "text") -> Iterator[Item]:
    """Yield a document per `conversion` record of a WET file (plain or gzipped).

    Records are found by their `WARC/1.0` lines, as cc_net parses WET, not by Content-Length:
    hand-edited files (cc_net's own test file among them) carry wrong lengths that would derail
    warcio. A body line reading exactly `WARC/1.0` would split a record; real text has none.
    """
    next_line = 1
    try:
        for record_no, (start, lines) in enumerate(_wet_records(decompressed_lines(path))):
            next_line = start + len(lines)
            item = _wet_item(lines, f"{path}#{record_no}", str(path), start)
            if item is not None:
                yield item
    except READ_ERRORS as err:
        yield Malformed(str(path), f"line {next_line}", f"cannot read the record from here on ({err})")


def _wet_records(lines: Iterable[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """(number of its first line, its lines) for each record; a record starts at a `WARC/1.0` line."""
    start, record = 1, []
    for line_no, line in enumerate(lines, start=1):
        if line.rstrip(b"\r") == b"WARC/1.0" and record:
            yield start, record
            start, record = line_no, []
        record.append(line)
    if record:
        yield start, record


def _wet_item(lines: list[bytes], doc_id: str, source: str, start: int) -> Item | None:
    if lines[0].rstrip(b"\r") != b"WARC/1.0":
        return Malformed(source, f"line {start}", "expected a 'WARC/1.0' line to start a record")
    end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    headers = dict(_header(line) for line in lines[1:end])
    if headers.get("WARC-Type") != "conversion":
        return None
    block = b"\n".join(lines[end + 1:]) + b"\n"
    try:
        text = RECORD_END.sub(b"", block).decode("utf-8")
    except UnicodeDecodeError as err:
        return Malformed(source, f"line {start}", f"not valid UTF-8 at byte {err.start} of the record text")
    return _web_document(doc_id, text, source, headers.get("WARC-Target-URI"),
                         headers.get("WARC-Record-ID"), headers.get("WARC-Date"), headers.get("Content-Type"))


def _header(line: bytes) -> tuple[str, str]:
    name, _, value = line.decode("utf-8", errors="replace").partition(":")
    return name.strip(), value.strip()


def _web_document(doc_id: str, text: str, source: str, url: str | None, record_id: str | None,
                  date: str | None, content_type: str | None) -> dict[str, Any]:
    metadata = {"url": url, "warc_record_id": record_id, "date": date, "content_type": content_type}
    return {"id": doc_id, "text": text, "source": source, "metadata": metadata}
