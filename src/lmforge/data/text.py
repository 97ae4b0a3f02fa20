"""The one word splitter: every data step that counts, cuts or compares words uses it.

MinHash shingles, the Gopher/C4/FineWeb quality rules, the length step, EDA augmentation and
the built-in corpus generator all count with `words`, so that "50 words", "512 words" and
"5-word shingles" mean the same thing everywhere (tests/unit/data/test_text.py checks it).

What a word is:
- CJK: every Han ideograph, kana (with the prolonged sound mark `ー`) and Hangul syllable or
  jamo is a word of its own. Chinese and Japanese are written without spaces, so a whitespace
  split would see a whole sentence as one word; one character is the usual unit there (close to
  a word in length, and what cc_net and the built-in corpus's truth use). Korean puts spaces
  between phrases, but its syllable blocks are counted the same way, so that a word count means
  the same in all three scripts.
- Every other script: Unicode word boundaries (UAX #29), in the simplified form below. A word
  starts with a letter or digit and continues over letters, digits, combining marks and
  zero-width (non-)joiners (so Devanagari vowel signs and Persian ZWNJ stay inside the word).
  Within a word, `'`, `’` and `.` join letters and digits ("don't", "e.g", "U.S.A", "3.14",
  "example.com", "v1.2"), `,` joins digits ("1,000"), and underscores join word parts
  ("snake_case", as UAX #29's ExtendNumLet does).
- Punctuation and symbols are never words and are dropped: hyphens and dashes split
  ("well-known" is two words, as in UAX #29), colons split ("12:30", "http://x"), a trailing
  full stop or apostrophe is not part of the word, and a run of symbols (`#$%`, `...`, emoji)
  counts as nothing. `tokens` keeps them, one character each, for token-per-line formats.
- Scripts written without spaces that are not CJK (Thai, Lao, Khmer, Myanmar) need a
  dictionary to find their words; here a whole run is one word.

The standard `re` module does the matching (1.7 times as fast as `regex` with its Unicode
properties); `re` has no class for combining marks, so it is built once from `unicodedata`.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

CJK = ("\u1100-\u11ff\u3005\u3007\u3021-\u3029\u3038-\u303b\u3041-\u3096\u309d-\u309f\u30a1-\u30fa"
       "\u30fc-\u30ff\u3131-\u318e\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97c\uac00-\ud7a3"
       "\ud7b0-\ud7fb\uf900-\ufaff\uff66-\uff9f\uffa0-\uffdc\U0001aff0-\U0001b16f\U00020000-\U000323af")
"""A word each: Hangul jamo and syllables, Han ideographs (with 々 〇 and Hangzhou numerals),
kana (with ー, without the ・ separator) and their half-width forms, as character ranges."""

Span = tuple[int, int]


def _class_ranges(category_prefix: str, upto: int = 0x30000) -> str:
    """The code points of a Unicode category (first letter) below `upto`, as `re` class ranges."""
    points = [c for c in range(upto) if unicodedata.category(chr(c)).startswith(category_prefix)]
    ranges, start = [], 0
    for i in range(1, len(points) + 1):
        if i == len(points) or points[i] != points[i - 1] + 1:
            a, b = chr(points[start]), chr(points[i - 1])
            ranges.append(re.escape(a) if a == b else f"{re.escape(a)}-{re.escape(b)}")
            start = i
    return "".join(ranges)


_MARKS = _class_ranges("M") + "\u200c\u200d\U000e0100-\U000e01ef"
"""Combining marks, ZWNJ/ZWJ and the variation selectors supplement: parts of the word before them."""
_START = rf"[^\W_{CJK}]"
_RUN = rf"{_START}+(?:[{_MARKS}]+{_START}*)*"
_JOINER = r"(?:['’.]|(?<=\d),(?=\d)|_+)"
WORD = re.compile(rf"[{CJK}][{_MARKS}]*|{_RUN}(?:{_JOINER}{_RUN})*")
"""A CJK character (with its combining marks), or a run of letters, digits and marks with joiners."""
_TOKEN = re.compile(rf"{WORD.pattern}|\S")
_CJK_CHAR = re.compile(f"[{CJK}]")


@lru_cache(maxsize=16)
def _words(text: str) -> tuple[str, ...]:
    """Cached because several steps in a row split the same document (the Gopher repetition and
    quality rules, FineWeb's list ratio); a hit costs a string hash, which Python keeps."""
    return tuple(WORD.findall(text))


def words(text: str) -> list[str]:
    """The words of `text`, in order (see the module docstring)."""
    return list(_words(text))


def count_words(text: str) -> int:
    """How many words `text` has; not cached, for the many short texts (lines, pieces) counted once."""
    return len(WORD.findall(text))


def word_spans(text: str) -> list[Span]:
    """(start, end) character offsets of every word of `text`, in order."""
    return [match.span() for match in WORD.finditer(text)]


def tokens(text: str) -> list[tuple[str, int]]:
    """(token, start) for the words of `text` and, between them, every other non-space character
    on its own: the words of `words`, plus punctuation and symbols as one-character tokens."""
    return [(match.group(), match.start()) for match in _TOKEN.finditer(text)]


def is_cjk_word(word: str) -> bool:
    """True for a word that is a single CJK character (the only kind of word with one)."""
    return _CJK_CHAR.match(word) is not None


def mostly_cjk(text_words: list[str]) -> bool:
    """Chinese/Japanese/Korean text: over half of its words are single CJK characters. Rules
    that measure word length or look for function words do not apply to such text."""
    return sum(map(is_cjk_word, text_words)) * 2 > len(text_words)
