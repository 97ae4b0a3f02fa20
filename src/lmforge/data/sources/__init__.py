"""Every source format as one stream of documents and `Malformed` records.

The reader of a file follows its name through `READERS` (suffix -> reader); a new format is one
reader function and one entry there. `hf:` sources are datasets, not files. Curation reads with
`iter_sources`, which reports bad records and goes on; `lmforge.data.documents.read_documents`
is the strict variant the tokenizer stage uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from lmforge.data.sources.base import Item, Malformed, Reader
from lmforge.data.sources.records import read_hf, read_jsonl, read_parquet, read_txt
from lmforge.data.sources.web import read_warc, read_wet

READERS: dict[str, Reader] = {
    ".jsonl": read_jsonl,
    ".jsonl.gz": read_jsonl,
    ".jsonl.zst": read_jsonl,
    ".json.gz": read_jsonl,  # dolma's *.json.gz files are JSONL
    ".parquet": read_parquet,
    ".txt": read_txt,
    ".warc": read_warc,
    ".warc.gz": read_warc,
    ".arc": read_warc,
    ".arc.gz": read_warc,
    ".wet": read_wet,
    ".wet.gz": read_wet,
}
"""File name suffix (lower case) -> reader; no suffix is the end of another."""
HF_PREFIX = "hf:"


def iter_sources(paths: str | Path | Iterable[str | Path], text_field: str = "text") -> Iterator[Item]:
    """Yield the documents of files, folders and `hf:` datasets, and a `Malformed` for each bad record.

    Folders are read recursively in sorted order, skipping hidden entries and unknown file
    types; a path given directly must have a known type. Empty files hold no documents. A web
    page whose main text trafilatura cannot find is yielded with empty text rather than as
    `Malformed`: its record is sound, and the length and quality steps then remove it with a
    reason that says so.
    """
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        if str(path).startswith(HF_PREFIX):
            yield from read_hf(str(path), text_field)
        else:
            yield from _read_path(Path(path), text_field)


def missing_sources(paths: Iterable[str | Path]) -> list[str]:
    """The paths among `paths` that name no file or folder (`hf:` datasets are not checked here:
    whether one loads is only known by loading it)."""
    return [str(path) for path in paths if not str(path).startswith(HF_PREFIX) and not Path(path).exists()]


def reader_for(path: Path) -> Reader | None:
    name = path.name.lower()
    return next((reader for suffix, reader in READERS.items() if name.endswith(suffix)), None)


def _read_path(path: Path, text_field: str) -> Iterator[Item]:
    if path.is_dir():
        for file in _files_under(path):
            yield from _read_file(file, text_field)
    elif not path.is_file():
        yield Malformed(str(path), "", "no such file or folder")
    elif reader_for(path) is None:
        yield Malformed(str(path), "", f"unsupported file type (expected {', '.join(READERS)})")
    else:
        yield from _read_file(path, text_field)


def _files_under(folder: Path) -> list[Path]:
    """Hidden entries are skipped: temporaries of atomic writes, caches, editor droppings."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and reader_for(p) is not None
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _read_file(path: Path, text_field: str) -> Iterator[Item]:
    """Readers report damaged content themselves; a file that cannot be opened at all is reported here."""
    try:
        if path.stat().st_size > 0:
            yield from reader_for(path)(path, text_field)
    except OSError as err:
        yield Malformed(str(path), "", f"cannot read ({err})")


__all__ = ["HF_PREFIX", "READERS", "Item", "Malformed", "Reader", "iter_sources", "missing_sources",
           "reader_for"]
