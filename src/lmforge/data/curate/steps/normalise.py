"""Unicode normalisation and whitespace/control-character repair, the first curation step.

Every later step compares text: exact dedup hashes it, MinHash shingles it, the quality rules
count its lines and words. Two renderings of the same text (composed vs decomposed accents,
CRLF vs LF, a stray zero-width space) would count as different, so they are unified here.
Mojibake repair is out of scope: guessing the wrong codec does more harm than the few
documents it would save.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Literal

from lmforge.config import Config
from lmforge.data.curate.base import Drop

_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\u00ad\u200b\u2060\ufeff]")
"""C0/C1 controls that are not line breaks or tabs, soft hyphen, zero-width space, word joiner
and BOM. Zero-width (non-)joiners stay: emoji sequences and Persian/Indic spelling need them."""
_LINE_BREAK = re.compile("\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
"""Everything `str.splitlines` treats as a line break, so that lines are only ever `\\n`."""
_TRAILING_SPACE = re.compile(r"[^\S\n]+$", re.MULTILINE)
_SPACE_RUN = re.compile(r"(?<=\S)[^\S\n]{2,}")
"""A run of spaces/tabs after a word; leading indentation (code, verse) is left alone."""
_BLANK_LINES = re.compile(r"\n{3,}")


class NormaliseSettings(Config):
    enabled: bool = True
    """Run this step; the runner leaves it out when false."""
    form: Literal["NFC", "NFKC"] = "NFC"
    """Unicode normal form. NFC (W3C's recommendation for the web) only unifies composed and
    decomposed characters; NFKC also folds compatibility forms (full-width letters, ligatures,
    superscripts), as some LM pipelines do, at the cost of changing what the text says."""


class Normalise:
    """Normal form, line breaks as `\\n`, no control or zero-width characters, single spaces
    between words, no trailing spaces, at most one blank line between paragraphs."""

    name = "normalise"

    def __init__(self, settings: NormaliseSettings) -> None:
        self.settings = settings

    def apply(self, doc: dict, counters: Counter) -> list[dict] | Drop:
        text = doc["text"]
        new = normalise_text(text, self.settings.form)
        if not new:
            return Drop("empty_after_normalise")
        if new == text:
            return [doc]
        counters["changed"] += 1
        return [{**doc, "text": new}]


def normalise_text(text: str, form: Literal["NFC", "NFKC"] = "NFC") -> str:
    """The cleaned text; already clean text comes back unchanged (and equal). The normal form is
    taken after removing invisible characters, which can separate a letter from its accent."""
    text = _LINE_BREAK.sub("\n", _INVISIBLE.sub("", text))
    if not unicodedata.is_normalized(form, text):
        text = unicodedata.normalize(form, text)
    text = _SPACE_RUN.sub(" ", _TRAILING_SPACE.sub("", text))
    return _BLANK_LINES.sub("\n\n", text).strip()
