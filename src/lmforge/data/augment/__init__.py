"""Data augmentation: EDA word edits, synonym sources, masked-LM proposals and back-translation.

Importing this is cheap: torch, the model folder and transformers load only when a
`MaskedLMProposer` or a `MarianTranslator` is built or first used.
"""

from __future__ import annotations

from lmforge.data.augment.eda import (
    Proposer,
    from_source,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from lmforge.data.augment.mlm import MaskedLMProposer
from lmforge.data.augment.synonyms import SynonymSource, WordNetMissing, WordNetSynonyms
from lmforge.data.augment.translate import MarianTranslator, Translator, back_translate

__all__ = [
    "MarianTranslator",
    "MaskedLMProposer",
    "Proposer",
    "SynonymSource",
    "Translator",
    "WordNetMissing",
    "WordNetSynonyms",
    "back_translate",
    "from_source",
    "random_deletion",
    "random_insertion",
    "random_swap",
    "synonym_replacement",
]
