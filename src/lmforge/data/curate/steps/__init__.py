"""Curation steps, in the order the curation stages run them.

Filtering (per shard, before dedup): normalise -> language -> quality.
Finishing (per shard, after the global dedup decision): dedup drop -> PII -> length -> augment.
The dedup drop step lives with the rest of dedup, in `lmforge.data.curate.dedup`.
"""

from __future__ import annotations

from lmforge.config import Config
from lmforge.data.curate.base import Step
from lmforge.data.curate.dedup.step import DedupDrop, DedupSettings
from lmforge.data.curate.steps.augment import Augment, AugmentSettings
from lmforge.data.curate.steps.language import LanguageFilter, LanguageSettings
from lmforge.data.curate.steps.length import Length, LengthSettings
from lmforge.data.curate.steps.normalise import Normalise, NormaliseSettings
from lmforge.data.curate.steps.pii import PiiAnonymiser, PiiSettings
from lmforge.data.curate.steps.quality import Quality, QualitySettings


class StepSettings(Config):
    normalise: NormaliseSettings = NormaliseSettings()
    """Unicode normalisation and whitespace/control-character repair."""
    language: LanguageSettings = LanguageSettings()
    """Language identification and the keep list."""
    quality: QualitySettings = QualitySettings()
    """Gopher, C4 and FineWeb quality rules."""
    dedup: DedupSettings = DedupSettings()
    """Exact (MD5) and near (MinHash LSH) deduplication across all shards."""
    pii: PiiSettings = PiiSettings()
    """PII anonymisation with typed placeholders."""
    length: LengthSettings = LengthSettings()
    """Minimum length, and splitting or truncating long documents (512 words)."""
    augment: AugmentSettings = AugmentSettings()
    """Augmented copies added next to the originals (EDA, back-translation); off by default."""


def filtering_steps(settings: StepSettings) -> list[Step]:
    steps: list[Step] = [Normalise(settings.normalise)] if settings.normalise.enabled else []
    return [*steps, LanguageFilter(settings.language), Quality(settings.quality)]


def finishing_steps(settings: StepSettings, decisions: dict[str, dict]) -> list[Step]:
    steps: list[Step] = [DedupDrop(decisions)]
    if settings.pii.enabled:
        steps.append(PiiAnonymiser(settings.pii))
    steps.append(Length(settings.length))
    if settings.augment.enabled:  # last: copies of the final, anonymised and split documents
        steps.append(Augment(settings.augment))
    return steps


__all__ = ["StepSettings", "filtering_steps", "finishing_steps"]
