"""The dedup settings, and the step that drops what the global dedup pass decided."""

from __future__ import annotations

from collections import Counter

from pydantic import Field

from lmforge.config import Config
from lmforge.data.curate.base import Drop


class DedupSettings(Config):
    exact: bool = True
    """Drop exact duplicates: MD5 of the normalised text (the guide's choice)."""
    near: bool = True
    """Drop near duplicates found by MinHash LSH."""
    bands: int = Field(14, ge=1)
    """LSH bands (FineWeb: 14)."""
    rows: int = Field(8, ge=1)
    """Rows per band (FineWeb: 8); detection 1 - (1 - s^rows)^bands is 50% at Jaccard 0.685."""
    ngram: int = Field(5, ge=1)
    """Words per shingle (FineWeb, RefinedWeb: 5); characters for CJK text."""
    seed: int = 1
    """Seed of the MinHash permutations."""


class DedupDrop:
    """The finishing stage's first step: drop what the global pass decided."""

    name = "dedup"

    def __init__(self, decisions: dict[str, dict]):
        self.decisions = decisions

    def apply(self, doc: dict, counters: Counter) -> list[dict] | Drop:
        decision = self.decisions.get(doc["id"])
        return [doc] if decision is None else Drop(decision["reason"])
