"""Gopher's quality and repetition rules (Rae et al. 2021, App. A and Table A1).

Rule names and thresholds are those of datatrove's `GopherQualityFilter` and
`GopherRepetitionFilter`, so that drop statistics compare one to one. Where this code measures
differently, it says so and why; mostly to make the rules hold for text that is not English.

Words are those of `lmforge.data.text`: punctuation and symbols are not words, and every CJK
character is one. Gopher (Rae et al. 2021, App. A) does not say how it splits words; datatrove
splits with a word tokenizer that keeps punctuation as tokens, and leaves pure-punctuation
tokens out of the word counts and mean word length, as here. Two rules read differently because
of that (see their settings): the alphabetic-word ratio, and the stop-word count.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import compress, islice

from pydantic import Field

from lmforge.config import Config
from lmforge.data.curate.base import Drop
from lmforge.data.text import mostly_cjk, words

_LETTER = re.compile(r"[^\W\d_]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
BULLETS = ("•", "●", "○", "◦", "▪", "‣", "-", "*")
"""Line starts counted as bullets; datatrove counts only "•", web text uses all of these."""
STOP_WORDS = {
    "en": ["the", "be", "to", "of", "and", "that", "have", "with"],
    "de": ["der", "die", "das", "und", "zu", "von", "mit", "ist"],
    "fr": ["le", "la", "les", "de", "et", "que", "est", "avec"],
    "es": ["el", "la", "los", "de", "y", "que", "es", "con"],
}
"""Gopher's English list, and the same kind of function words for the other languages of the
built-in corpus: any real sentence of the language has two of them."""
CJK_CHARS_PER_WORD = 2
"""A Chinese word is about two characters long (1.6-1.9 in segmented corpora); repetition
n-grams of Chinese/Japanese text are taken over this many characters per word, so that they
compare phrases, as Gopher's word n-grams do, rather than fragments of words."""


class GopherQualitySettings(Config):
    enabled: bool = True
    """Apply these rules (FineWeb does)."""
    min_doc_words: int | None = Field(50, ge=0)
    """Drop under this many words (gopher_short_doc); Gopher (Rae et al. 2021, App. A)."""
    max_doc_words: int | None = Field(100_000, gt=0)
    """Drop over this many words (gopher_long_doc); Gopher (Rae et al. 2021, App. A)."""
    min_avg_word_length: float | None = 3
    """Drop if the mean word length is below (gopher_below_avg_threshold); Gopher (App. A).
    Not applied to Chinese/Japanese, where every character counts as a word."""
    max_avg_word_length: float | None = 10
    """Drop if the mean word length is above (gopher_above_avg_threshold); Gopher (App. A)."""
    max_symbol_word_ratio: float | None = 0.1
    """Drop if `#` or ellipses per word exceed this (gopher_too_many_hashes / _ellipsis);
    Gopher (App. A)."""
    max_bullet_lines_ratio: float | None = 0.9
    """Drop if more lines start with a bullet (gopher_too_many_bullets); Gopher (App. A)."""
    max_ellipsis_lines_ratio: float | None = 0.3
    """Drop if more lines end with an ellipsis (gopher_too_many_end_ellipsis); Gopher (App. A)."""
    min_alpha_words_ratio: float | None = 0.8
    """Drop if fewer words contain a letter (gopher_below_alpha_threshold); Gopher (App. A).
    datatrove calls it `max_non_alpha_words_ratio`, but it is a minimum. Our words hold no
    punctuation, so only numbers count against the ratio; datatrove also counts every
    punctuation token against it, which is why it removes far more text at the same 0.8
    (benchmarks/results/curation_throughput.md). Symbol-only pages have few words, and fall to
    `min_doc_words` and the hash and ellipsis ratios instead."""
    min_stop_words: int | None = 2
    """Drop with fewer stop-word occurrences (gopher_enough_stop_words); Gopher (App. A). Only
    for languages in `stop_words` (a document without a language is taken to be English), never
    for Chinese/Japanese/Korean text. A contraction is one word, so "that's" is not "that"."""
    stop_words: dict[str, list[str]] = Field(default_factory=lambda: dict(STOP_WORDS))
    """Stop words per language code (as the language step writes to metadata["lang"]);
    Gopher's English list (App. A), and equivalents for de/fr/es chosen here."""


class GopherQuality:
    """Documents that do not look like prose: too short or long, odd word lengths, symbol or
    bullet lists, cut-off lines, numbers or symbols instead of words, no function words."""

    name = "gopher_quality"

    def __init__(self, settings: GopherQualitySettings) -> None:
        self.settings = settings
        self.stop_words = {lang: frozenset(w for word in ws for w in (word, word.capitalize()))
                           for lang, ws in settings.stop_words.items()}

    def apply(self, doc: dict, counters: Counter) -> list[dict] | Drop:
        text = doc["text"]
        tokens = words(text)
        cjk = mostly_cjk(tokens)
        reason = (self._length(tokens, cjk) or self._marks(text, len(tokens))
                  or self._letters(tokens) or self._stop_words(tokens, cjk, doc["metadata"], counters))
        return Drop(reason) if reason else [doc]

    def _length(self, tokens: list[str], cjk: bool) -> str | None:
        s, n = self.settings, len(tokens)
        if s.min_doc_words is not None and n < s.min_doc_words:
            return "gopher_short_doc"
        if s.max_doc_words is not None and n > s.max_doc_words:
            return "gopher_long_doc"
        mean = sum(map(len, tokens)) / n if n else 0.0
        if not cjk and s.min_avg_word_length is not None and mean < s.min_avg_word_length:
            return "gopher_below_avg_threshold"
        if not cjk and s.max_avg_word_length is not None and mean > s.max_avg_word_length:
            return "gopher_above_avg_threshold"
        return None

    def _marks(self, text: str, n_words: int) -> str | None:
        s, n = self.settings, max(n_words, 1)
        if s.max_symbol_word_ratio is not None:
            if text.count("#") / n > s.max_symbol_word_ratio:
                return "gopher_too_many_hashes"
            if (text.count("...") + text.count("…")) / n > s.max_symbol_word_ratio:
                return "gopher_too_many_ellipsis"
        lines = non_empty_lines(text)
        n_lines = max(len(lines), 1)
        bullets = sum(1 for line in lines if line.lstrip().startswith(BULLETS))
        if s.max_bullet_lines_ratio is not None and bullets / n_lines > s.max_bullet_lines_ratio:
            return "gopher_too_many_bullets"
        ellipsis = sum(1 for line in lines if line.rstrip().endswith(("...", "…")))
        if s.max_ellipsis_lines_ratio is not None and ellipsis / n_lines > s.max_ellipsis_lines_ratio:
            return "gopher_too_many_end_ellipsis"
        return None

    def _letters(self, tokens: list[str]) -> str | None:
        """Our words hold letters, digits and marks only, so a word without a letter is a number."""
        ratio = self.settings.min_alpha_words_ratio
        if ratio is None or not tokens:
            return None
        with_letter = sum(1 for w in tokens if w.isalpha() or _LETTER.search(w))
        return "gopher_below_alpha_threshold" if with_letter / len(tokens) < ratio else None

    def _stop_words(self, tokens: list[str], cjk: bool, metadata: dict, counters: Counter) -> str | None:
        minimum = self.settings.min_stop_words
        if minimum is None or cjk:
            return None
        stop_words = self.stop_words.get((metadata.get("lang") or "en").split("-")[0])
        if stop_words is None:
            counters["stop_words_unknown_lang"] += 1
            return None
        found = sum(map(stop_words.__contains__, tokens))
        return "gopher_enough_stop_words" if found < minimum else None


class GopherRepetitionSettings(Config):
    enabled: bool = True
    """Apply these rules (FineWeb does)."""
    dup_line_frac: float | None = 0.3
    """Drop if a larger share of lines are repeats of earlier lines; Gopher Table A1."""
    dup_para_frac: float | None = 0.3
    """Drop if a larger share of paragraphs are repeats; Gopher Table A1."""
    dup_line_char_frac: float | None = 0.2
    """Drop if repeated lines hold a larger share of the characters; Gopher Table A1."""
    dup_para_char_frac: float | None = 0.2
    """Drop if repeated paragraphs hold a larger share of the characters; Gopher Table A1."""
    top_n_gram_frac: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    """n -> maximum share of word characters in the most frequent repeated n-gram; Table A1."""
    dup_n_gram_frac: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    """n -> maximum share of word characters covered by n-grams that occur more than once;
    Gopher Table A1."""


class GopherRepetition:
    """Documents that repeat themselves: duplicated lines, paragraphs, or n-grams.

    Blank lines are paragraph separators, not lines (datatrove counts them, so a text with many
    paragraphs looks repetitive to it). N-gram shares are measured over word characters, not
    over the whole text, so that they mean the same for Chinese, whose words have no spaces.
    A top n-gram counts only if it occurs more than once.
    """

    name = "gopher_repetition"

    def __init__(self, settings: GopherRepetitionSettings) -> None:
        self.settings = settings

    def apply(self, doc: dict, counters: Counter) -> list[dict] | Drop:
        text = doc["text"]
        reason = self._blocks(text) or self._n_grams(text)
        return Drop(reason) if reason else [doc]

    def _blocks(self, text: str) -> str | None:
        s, size = self.settings, max(len(text), 1)
        paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
        count, chars = find_duplicates(paragraphs)
        if s.dup_para_frac is not None and count / max(len(paragraphs), 1) > s.dup_para_frac:
            return "dup_para_frac"
        if s.dup_para_char_frac is not None and chars / size > s.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = non_empty_lines(text)
        count, chars = find_duplicates(lines)
        if s.dup_line_frac is not None and count / max(len(lines), 1) > s.dup_line_frac:
            return "dup_line_frac"
        if s.dup_line_char_frac is not None and chars / size > s.dup_line_char_frac:
            return "dup_line_char_frac"
        return None

    def _n_grams(self, text: str) -> str | None:
        tokens = words(text)
        unit = CJK_CHARS_PER_WORD if mostly_cjk(tokens) else 1
        total = sum(map(len, tokens))
        for n, frac in sorted(self.settings.top_n_gram_frac.items()):
            top = Counter(n_grams(tokens, n * unit)).most_common(1)
            if top and top[0][1] > 1 and top[0][1] * sum(map(len, top[0][0])) > frac * total:
                return f"top_{n}_gram"
        for n, frac in sorted(self.settings.dup_n_gram_frac.items()):
            covered = duplicated_chars(tokens, n * unit)
            if covered == 0:
                break  # no n-gram repeats, so no longer one can
            if covered > frac * total:
                return f"duplicated_{n}_n_grams"
        return None


def non_empty_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and their characters."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def n_grams(tokens: list[str], n: int) -> zip:
    return zip(*(islice(tokens, i, None) for i in range(n)), strict=False)


def duplicated_chars(tokens: list[str], n: int) -> int:
    """Characters of the n-gram occurrences that repeat an earlier one; after a repeat the count
    jumps past it, so overlapping repeats count once (datatrove's `find_all_duplicate`, which
    FineWeb was tuned with; counting first occurrences too, as Gopher's text reads, dropped 1%
    of Wikipedia paragraphs). Only positions of repeated n-grams are visited in Python."""
    grams = list(n_grams(tokens, n))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return 0
    repeated = {gram for gram, count in counts.items() if count > 1}
    seen: set[tuple[str, ...]] = set()
    chars = resume = 0
    for i in compress(range(len(grams)), map(repeated.__contains__, grams)):
        if i < resume:
            continue
        if grams[i] in seen:
            chars += sum(map(len, grams[i]))
            resume = i + n
        else:
            seen.add(grams[i])
    return chars
