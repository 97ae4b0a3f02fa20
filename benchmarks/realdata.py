"""Where the benchmarks find the shared real datasets, and how they turn pieces into documents."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def data_dir(arg: str | Path | None = None) -> Path:
    """--data, else $LMFORGE_DATA, else the shared folder beside the repository."""
    return Path(arg or os.environ.get("LMFORGE_DATA") or REPO.parent / "shared" / "data")


def joined(pieces: Iterable[str], sep: str, words: int = 200) -> list[str]:
    """Consecutive pieces joined into documents of at least `words` words (the rest dropped)."""
    docs, current, count = [], [], 0
    for piece in pieces:
        current.append(piece)
        count += len(piece.split())
        if count >= words:
            docs.append(sep.join(current))
            current, count = [], 0
    return docs
