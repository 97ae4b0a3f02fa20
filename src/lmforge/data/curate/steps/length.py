"""Length limits: drop fragments, and split (default) or truncate documents over the limit.

The guide truncates at 512 words, which silently throws away most of a long document; split
mode cuts it into chunks instead, at paragraph, then line, then sentence boundaries, and only
inside a sentence when a single sentence is over the limit, so no text is lost.

Words are those of `lmforge.data.text`, the splitter the quality rules and MinHash count with
too, so a document the quality step measured at 600 words is split here at the same count.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from typing import Literal

from pydantic import Field

from lmforge.config import Config
from lmforge.data.curate.base import Drop
from lmforge.data.text import count_words, word_spans

_BOUNDARIES = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?])\s+|(?<=[。！？])"),
)
"""Where a long text may be cut, coarsest first: paragraphs, lines, sentences."""


class LengthSettings(Config):
    min_words: int = Field(5, ge=0)
    """Documents with fewer words are dropped as `too_short`. 5 removes what is not even a
    sentence (a title, a menu item, "Contact"; C4 drops lines of under 3 words), which carries
    no language for the language step either. Gopher's 50-word document minimum (Rae et al.
    2021, App. A) is a quality rule and lives in the quality step."""
    max_words: int = Field(512, gt=0)
    """Documents with more words are split or truncated; 512 is the guide's limit."""
    mode: Literal["split", "truncate"] = "split"
    """split: chunks of at most max_words words, balanced in size, nothing lost; chunk k of
    document d gets id `d#k` and metadata `parent_id`, `chunk`. truncate: keep the first
    max_words words (the guide's mode)."""


class Length:
    """Drops documents under `min_words`; splits or truncates those over `max_words`."""

    name = "length"

    def __init__(self, settings: LengthSettings) -> None:
        self.settings = settings

    def apply(self, doc: dict, counters: Counter) -> list[dict] | Drop:
        s = self.settings
        n = count_words(doc["text"])
        if n < s.min_words:
            return Drop("too_short")
        if n <= s.max_words:
            return [doc]
        if s.mode == "truncate":
            counters["truncated_words"] += n - s.max_words
            return [{**doc, "text": truncate_text(doc["text"], s.max_words)}]
        chunks = split_text(doc["text"], s.max_words)
        counters["split_documents"] += 1
        counters["chunks"] += len(chunks)
        return [{**doc, "id": f"{doc['id']}#{k}", "text": chunk,
                 "metadata": {**doc["metadata"], "parent_id": doc["id"], "chunk": k}}
                for k, chunk in enumerate(chunks)]


def truncate_text(text: str, max_words: int) -> str:
    """The text up to (not including) its word number max_words + 1."""
    spans = word_spans(text)
    return text if len(spans) <= max_words else text[:spans[max_words][0]].rstrip()


def split_text(text: str, max_words: int) -> list[str]:
    """Chunks of at most max_words words that together hold all the words of `text`.

    Pieces are packed greedily towards an equal share of the words, so that a 520-word text
    becomes two chunks of about 260 rather than 512 + 8 (a tail too short to learn from).
    """
    pieces = list(_pieces(text, max_words))
    total = sum(n for _, n in pieces)
    target = total / math.ceil(total / max_words)
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for piece, n in pieces:
        if current and (size + n > max_words or size + n / 2 > target):
            chunks.append("".join(current).strip())
            current, size = [], 0
        current.append(piece)
        size += n
    chunks.append("".join(current).strip())
    return [chunk for chunk in chunks if chunk]


def _pieces(text: str, max_words: int, level: int = 0) -> Iterator[tuple[str, int]]:
    """(piece, words) of at most max_words words each, cut at the coarsest boundary that does it."""
    if level == len(_BOUNDARIES):
        starts = [start for start, _ in word_spans(text)][max_words::max_words]
        yield from ((piece, count_words(piece)) for piece in _cut(text, starts))
        return
    for piece in _cut(text, [m.end() for m in _BOUNDARIES[level].finditer(text)]):
        n = count_words(piece)
        if n <= max_words:
            yield piece, n
        else:
            yield from _pieces(piece, max_words, level + 1)


def _cut(text: str, offsets: list[int]) -> list[str]:
    bounds = [0, *offsets, len(text)]
    return [text[a:b] for a, b in pairwise(bounds) if a < b]
