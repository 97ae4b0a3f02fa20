"""C4's line cleaning (Raffel et al. 2020, Sec. 2.2) and FineWeb's extra rules (Penedo et al. 2024).

Rule names and thresholds are those of datatrove's `C4QualityFilter` and `FineWebQualityFilter`,
whose FineWeb configuration (`examples/fineweb.py`) is the default here. Terminal punctuation
includes the Chinese/Japanese full stops and marks, which datatrove (English-only) lacks:
without them every Chinese line would count as unfinished.
"""

from __future__ import annotations

import re
from collections import Counter

from pydantic import Field

from lmforge.config import Config
from lmforge.data.curate.base import Drop
from lmforge.data.curate.steps.quality_gopher import find_duplicates, non_empty_lines
from lmforge.data.text import count_words, words

END_PUNCTUATION = (".", "!", "?", '"', "'", "。", "！", "？", "”", "’", "»")
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’»)]*(?=\s|$)|[。！？]+[”’」』）]*")
_BLANK_LINES = re.compile(r"\n{3,}")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
"""Phrases of cookie banners and legal footers (C4's code, via datatrove)."""


class C4QualitySettings(Config):
    enabled: bool = True
    """Apply C4's rules (FineWeb does, without the terminal-punctuation rule)."""
    filter_no_terminal_punct: bool = False
    """Remove lines that do not end in terminal punctuation (or end in "..."). C4 does; FineWeb
    turned it off: it removed too much good text for its gain (Penedo et al. 2024)."""
    min_words_per_line: int = Field(3, ge=0)
    """Remove lines with fewer words; C4 (Raffel et al. 2020)."""
    max_word_length: int = Field(1000, gt=0)
    """Remove lines holding a longer word (unsplit URLs, base64); C4's code."""
    min_sentences: int = Field(5, ge=0)
    """Drop documents with fewer sentences in the kept lines (too_few_sentences); C4."""
    remove_citations: bool = True
    """Strip Wikipedia markers `[1]`, `[edit]`, `[citation needed]`; C4's code."""
    filter_curly_bracket: bool = True
    """Drop documents containing `{` (curly_bracket): C4's way to remove code; turn off to keep
    code in the corpus."""


class C4Quality:
    """Removes boilerplate lines (too short, "javascript", cookie and legal phrases, and if set
    unfinished ones) and then documents left with too few sentences, placeholder text (lorem
    ipsum) or code. Blank lines stay as paragraph separators (datatrove drops them as lines of
    under 3 words), so that the length step can still cut at paragraphs."""

    name = "c4_quality"

    def __init__(self, settings: C4QualitySettings) -> None:
        self.settings = settings

    def apply(self, doc: dict, counters: Counter) -> list[dict] | Drop:
        s, text = self.settings, doc["text"]
        if "lorem ipsum" in text.lower():
            return Drop("lorem_ipsum")
        if s.filter_curly_bracket and "{" in text:
            return Drop("curly_bracket")
        if s.remove_citations:
            text = _CITATION.sub("", text)
        kept, sentences = [], 0
        for line in text.splitlines():
            line = line.strip()
            problem = self._line_problem(line) if line else None
            if problem:
                counters[f"c4_lines_{problem}"] += 1
                continue
            kept.append(line)
            sentences += count_sentences(line)
        if sentences < s.min_sentences:
            return Drop("too_few_sentences")
        new = _BLANK_LINES.sub("\n\n", "\n".join(kept)).strip()
        return [doc] if new == doc["text"] else [{**doc, "text": new}]

    def _line_problem(self, line: str) -> str | None:
        s = self.settings
        if len(line) > s.max_word_length and any(len(w) > s.max_word_length for w in line.split()):
            return "too_long_word"
        if s.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
            return "no_terminal_punct"
        if s.min_words_per_line and count_words(line) < s.min_words_per_line:
            return "too_few_words"
        lower = line.lower()
        if "javascript" in lower:
            return "javascript"
        if any(phrase in lower for phrase in POLICY):
            return "policy"
        return None


def count_sentences(line: str) -> int:
    """Sentences in a line, by their end marks; text after the last one counts as one more.
    Cruder than nltk's punkt (which C4 used), and many times faster."""
    ends = [m.end() for m in _SENTENCE_END.finditer(line)]
    return len(ends) + bool(line[ends[-1] if ends else 0:].strip())


class FineWebQualitySettings(Config):
    enabled: bool = True
    """Apply FineWeb's rules (Penedo et al. 2024)."""
    line_punct_thr: float = 0.12
    """Drop if at most this share of lines end in terminal punctuation (line_punct_ratio);
    FineWeb / datatrove default."""
    short_line_length: int = Field(30, gt=0)
    """A line of at most this many characters is short; FineWeb / datatrove default."""
    short_line_thr: float = 0.67
    """Drop if at least this share of lines are short (short_line_ratio); FineWeb."""
    char_duplicates_ratio: float = 0.01
    """Drop if characters in repeated lines reach this share (char_dup_ratio); FineWeb's code
    default."""
    new_line_ratio: float = 0.3
    """Drop if line breaks per word exceed this (list_ratio): lists, not prose; FineWeb. Its
    words include punctuation tokens and ours do not, so the same 0.3 is a little stricter
    here (a list item of 3 words and a full stop is 3 words, not 4)."""


class FineWebQuality:
    """FineWeb's rules against lists, menus and repeated lines that Gopher and C4 let through.
    Lines are the non-blank ones: blank lines separate paragraphs, they are not short lines."""

    name = "fineweb_quality"

    def __init__(self, settings: FineWebQualitySettings) -> None:
        self.settings = settings

    def apply(self, doc: dict, counters: Counter) -> list[dict] | Drop:
        s, text = self.settings, doc["text"]
        lines = non_empty_lines(text)
        n_lines = max(len(lines), 1)
        if sum(1 for line in lines if line.endswith(END_PUNCTUATION)) / n_lines <= s.line_punct_thr:
            return Drop("line_punct_ratio")
        if sum(1 for line in lines if len(line) <= s.short_line_length) / n_lines >= s.short_line_thr:
            return Drop("short_line_ratio")
        if find_duplicates(lines)[1] / max(len(text) - text.count("\n"), 1) >= s.char_duplicates_ratio:
            return Drop("char_dup_ratio")
        if (len(lines) - 1) / max(len(words(text)), 1) > s.new_line_ratio:
            return Drop("list_ratio")
        return [doc]
