"""Augmentation (off by default): keep every document and add augmented copies of it.

Methods: `eda` (Wei & Zou 2019; replacement and insertion words from WordNet, or proposed in
context by a masked LM from our own pretraining) and `back_translation` (through a pivot
language with local MarianMT models). A copy of document `d` is a new document `d~aug{k}` with
metadata `augmented_from: d` and `augmentation: <method>`; a copy identical to its original is
not added. Copies are documents no source had, so the accounting (input = kept + removed) counts
only documents without `augmented_from`.

Why off: Longpre et al. 2020 found that EDA and back-translation "fail to consistently improve
performance for pretrained transformers, even when training data is limited". Augmentation is
for small fine-tuning sets and for transfer data in distillation, not for a pretraining corpus.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lmforge.config import Config
from lmforge.data.augment import (
    MarianTranslator,
    MaskedLMProposer,
    Proposer,
    WordNetSynonyms,
    back_translate,
    from_source,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from lmforge.data.curate.base import Drop

Method = Literal["eda", "back_translation"]
EdaOp = Literal["synonym_replacement", "random_insertion", "random_swap", "random_deletion"]
WORD_OPS = {"synonym_replacement": synonym_replacement, "random_insertion": random_insertion}
"""The EDA operations that need replacement words."""
PLAIN_OPS = {"random_swap": random_swap, "random_deletion": random_deletion}


class AugmentSettings(Config):
    enabled: bool = False
    """Add augmented copies. Off: see the module docstring (Longpre et al. 2020)."""
    methods: list[Method] = Field(["eda"], min_length=1)
    """eda: EDA's word edits (Wei & Zou 2019). back_translation: through `pivot` and back
    (Sennrich et al. 2016); needs `translation_models`."""
    eda_ops: list[EdaOp] = Field(list(WORD_OPS) + list(PLAIN_OPS), min_length=1)
    """EDA's four operations (Wei & Zou 2019). Copy k applies operation k mod len(eda_ops): one
    operation per copy, as eda_nlp makes each augmented sentence."""
    n_aug: int = Field(4, ge=1)
    """EDA copies per document. 4: Wei & Zou 2019's recommendation for training sets of 5,000
    or more (Table 3); eda_nlp's script default, 9, is meant for small sets."""
    alpha: float = Field(0.1, gt=0.0, le=1.0)
    """Fraction of words each EDA operation changes (deletion: probability per word). 0.1: Wei
    & Zou 2019's recommended value and eda_nlp's default for all four operations."""
    synonyms: Literal["wordnet", "mlm"] = "wordnet"
    """Source of replacement and insertion words. wordnet: NLTK's WordNet, as eda_nlp (English
    only; must be installed, nothing is downloaded). mlm: in-context picks of `mlm_model`."""
    mlm_model: Path | None = None
    """Model folder of our own masked-LM pretraining, for `synonyms: mlm`."""
    mlm_top_k: int = Field(5, ge=1)
    """Predictions considered per masked word. 5: nlpaug's ContextualWordEmbsAug (`aug_n`, the
    'top n similar words for lucky draw')."""
    translation_models: dict[str, Path] = {}
    """Local MarianMT folders by direction, e.g. {en-de: models/opus-mt-en-de, de-en: ...}.
    A document is back-translated when both directions between its language and `pivot` exist."""
    pivot: str = "de"
    """Pivot language. German, the pair of nlpaug's default back-translation models
    (facebook/wmt19-en-de and -de-en) and of Sennrich et al. 2016."""
    batch_size: int = Field(32, ge=1)
    """Sentences per translation batch; nlpaug's BackTranslationAug default."""
    max_length: int = Field(300, ge=1)
    """Token limit of a sentence in and out of translation; nlpaug's BackTranslationAug default."""
    seed: int = 1
    """Seeds each document's augmentation together with its id: reruns and worker counts give
    the same copies."""

    @model_validator(mode="after")
    def _check_models(self) -> AugmentSettings:
        """Fail before any work starts, not in a worker after dedup."""
        if not self.enabled:
            return self
        if "eda" in self.methods and self.synonyms == "mlm" and self.mlm_model is None:
            raise ValueError("synonyms: mlm needs mlm_model (a model folder)")
        if "back_translation" in self.methods and not self.translation_models:
            raise ValueError("back_translation needs translation_models, e.g. {en-de: DIR, de-en: DIR}")
        folders = [p for p in [self.mlm_model, *self.translation_models.values()] if p is not None]
        missing = [str(p) for p in folders if not p.is_dir()]
        if missing:
            raise ValueError(f"model folders not found: {', '.join(missing)}")
        return self


class Augment:
    """Passes each document on with its augmented copies after it; counts copies per method."""

    name = "augment"

    def __init__(self, settings: AugmentSettings) -> None:
        self.settings = settings
        needs_words = "eda" in settings.methods and any(op in WORD_OPS for op in settings.eda_ops)
        self.words = _replacement_words(settings) if needs_words else None
        self.translator = (MarianTranslator(settings.translation_models, settings.batch_size,
                                            settings.max_length)
                           if "back_translation" in settings.methods else None)

    def apply(self, doc: dict, counters: Counter) -> list[dict] | Drop:
        rng = random.Random(f"{self.settings.seed}:{doc['id']}")
        copies: list[dict] = []
        for method, text in self._variants(doc, rng, counters):
            if text == doc["text"]:
                counters[f"{method}_unchanged"] += 1
                continue
            counters[method] += 1
            copies.append({**doc, "id": f"{doc['id']}~aug{len(copies)}", "text": text,
                           "metadata": {**doc["metadata"], "augmented_from": doc["id"],
                                        "augmentation": method}})
        return [doc, *copies]

    def _variants(self, doc: dict, rng: random.Random, counters: Counter) -> Iterator[tuple[str, str]]:
        """(method, augmented text) pairs; a document without a language is taken to be English."""
        s, text = self.settings, doc["text"]
        lang = doc["metadata"].get("lang", "en")
        if "eda" in s.methods:
            for k in range(s.n_aug):
                op = s.eda_ops[k % len(s.eda_ops)]
                if op in WORD_OPS:
                    yield op, WORD_OPS[op](text, rng, s.alpha, self.words(lang))
                else:
                    yield op, PLAIN_OPS[op](text, rng, s.alpha)
        if "back_translation" in s.methods:
            if {f"{lang}-{s.pivot}", f"{s.pivot}-{lang}"} <= s.translation_models.keys():
                yield "back_translation", back_translate([text], self.translator, lang, s.pivot)[0]
            else:
                counters["back_translation_no_model"] += 1


def _replacement_words(settings: AugmentSettings) -> Callable[[str], Proposer]:
    """The proposer for a document language: WordNet's synonyms, or the masked LM's picks."""
    if settings.synonyms == "mlm":
        proposer = MaskedLMProposer(settings.mlm_model, settings.mlm_top_k)
        return lambda lang: proposer
    return partial(from_source, WordNetSynonyms())
