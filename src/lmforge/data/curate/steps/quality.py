"""The quality step: boilerplate and low-quality removal by Gopher, C4 and FineWeb heuristics.

The default is FineWeb's filtering (datatrove `examples/fineweb.py`, Penedo et al. 2024), in
its order: Gopher repetition, Gopher quality, C4 without the terminal-punctuation rule, FineWeb's
own rules. Each group can be turned off (`quality.c4.enabled=false`) and each threshold set
(`quality.gopher.min_doc_words=30`); every drop reason names the rule.

Language: the rules are English-born. Gopher's stop-word rule uses a list per language from
`metadata["lang"]` (set by the language step) and is skipped for languages without one; in
Chinese and Japanese every character counts as a word and the word-length rules are skipped.
"""

from __future__ import annotations

from collections import Counter

from pydantic import Field

from lmforge.config import Config
from lmforge.data.curate.base import Drop
from lmforge.data.curate.steps.quality_gopher import (
    GopherQuality,
    GopherQualitySettings,
    GopherRepetition,
    GopherRepetitionSettings,
)
from lmforge.data.curate.steps.quality_web import (
    C4Quality,
    C4QualitySettings,
    FineWebQuality,
    FineWebQualitySettings,
)


class QualitySettings(Config):
    repetition: GopherRepetitionSettings = Field(default_factory=GopherRepetitionSettings)
    """Gopher repetition rules (Rae et al. 2021, Table A1)."""
    gopher: GopherQualitySettings = Field(default_factory=GopherQualitySettings)
    """Gopher quality rules (Rae et al. 2021, App. A)."""
    c4: C4QualitySettings = Field(default_factory=C4QualitySettings)
    """C4 line cleaning and page rules (Raffel et al. 2020), as FineWeb configures them."""
    fineweb: FineWebQualitySettings = Field(default_factory=FineWebQualitySettings)
    """FineWeb's additional rules (Penedo et al. 2024)."""


class Quality:
    """The enabled rule groups in FineWeb's order; the first rule that fails names the drop.
    C4 may rewrite the text (removed lines), and the later groups judge what is left."""

    name = "quality"

    def __init__(self, settings: QualitySettings) -> None:
        groups = [(settings.repetition, GopherRepetition), (settings.gopher, GopherQuality),
                  (settings.c4, C4Quality), (settings.fineweb, FineWebQuality)]
        self.groups = [group(group_settings) for group_settings, group in groups if group_settings.enabled]

    def apply(self, doc: dict, counters: Counter) -> list[dict] | Drop:
        for group in self.groups:
            result = group.apply(doc, counters)
            if isinstance(result, Drop):
                return result
            [doc] = result
        return [doc]
