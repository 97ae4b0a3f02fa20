"""The one word splitter, and the steps that count with it agreeing on every text."""

from __future__ import annotations

from collections import Counter

import pytest

from lmforge.data.curate.base import Drop
from lmforge.data.curate.dedup.minhash import MinHasher, fold, shingle_words
from lmforge.data.curate.steps.length import Length, LengthSettings
from lmforge.data.curate.steps.quality_gopher import GopherQuality, GopherQualitySettings
from lmforge.data.text import count_words, mostly_cjk, tokens, word_spans, words

TEXTS = {
    "english": "The quick fox doesn't jump over the lazy dog; it's 3.14 metres away, e.g. at 1,000 km/h.",
    "chinese": "东京是日本的首都。北京是中国的首都，人口超过2000万。",
    "japanese": "東京タワーは高いです。コーヒーを飲みます！",
    "korean": "한국어 텍스트를 처리합니다.",
    "mixed": "Die Straße heißt „Café du Monde“ — 东京 Tower (2024), see https://example.com/a_b?x=1.",
    "punctuation": "!!! ... --- ### ??? *** (((a))) [[b]] {{c}} @@@ ~~~ 42% $5.00 #tag #### … — 🙂🙂 '' __",
    "marks": "हिन्दी भाषा; café vs. cafe\u0301; می‌خواهم",
}


def test_words_follow_the_documented_definition():
    assert words(TEXTS["english"]) == ["The", "quick", "fox", "doesn't", "jump", "over", "the", "lazy", "dog",
                                       "it's", "3.14", "metres", "away", "e.g", "at", "1,000", "km", "h"]
    assert words(TEXTS["chinese"]) == [*"东京是日本的首都北京是中国的首都人口超过", "2000", "万"]
    assert words(TEXTS["japanese"]) == [*"東京タワーは高いですコーヒーを飲みます"]
    assert words(TEXTS["korean"]) == [*"한국어텍스트를처리합니다"]
    assert words(TEXTS["mixed"]) == ["Die", "Straße", "heißt", "Café", "du", "Monde", "东", "京", "Tower",
                                     "2024", "see", "https", "example.com", "a_b", "x", "1"]
    assert words(TEXTS["punctuation"]) == ["a", "b", "c", "42", "5.00", "tag"]
    assert words(TEXTS["marks"]) == ["हिन्दी", "भाषा", "café", "vs", "cafe\u0301", "می‌خواهم"]
    assert words("well-known a—b 12:30 snake_case __init__ 'quoted' end. Next") == [
        "well", "known", "a", "b", "12", "30", "snake_case", "init", "quoted", "end", "Next"]
    assert words("") == [] and words(" \n\t") == [] and count_words("...") == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("Hello, world!", ["Hello", "world"]),
    ("Don't e-mail l'école -- 3.5 ...", ["Don't", "e", "mail", "l'école", "3.5"]),
    ("我爱北京。", ["我", "爱", "北", "京"]),
    ("用Python写代码", ["用", "Python", "写", "代", "码"]),
    ("--- !!! ###", []),
])
def test_words_count_cjk_characters_and_skip_symbols(text, expected):
    assert words(text) == expected


def test_spans_tokens_and_counts_are_the_same_words():
    for text in TEXTS.values():
        split = words(text)
        assert [text[a:b] for a, b in word_spans(text)] == split
        assert count_words(text) == len(split)
        found = tokens(text)
        assert all(text[at:at + len(token)] == token for token, at in found)
        assert [token for token, at in found if (at, at + len(token)) in set(word_spans(text))] == split
        assert "".join(token for token, _ in found) == "".join(text.split())
    assert tokens("Hi, Ann!") == [("Hi", 0), (",", 2), ("Ann", 4), ("!", 7)]


def test_cjk_text_is_told_apart_by_its_words():
    assert mostly_cjk(words(TEXTS["chinese"])) and mostly_cjk(words(TEXTS["korean"]))
    assert not mostly_cjk(words(TEXTS["english"])) and not mostly_cjk(words(TEXTS["mixed"]))
    assert not mostly_cjk([])


def length_count(text: str) -> int:
    """The word count the length step acts on: it keeps `text` at min_words = n, drops it at n + 1."""
    def kept(minimum: int) -> bool:
        doc = {"id": "d", "text": text, "metadata": {}}
        return Length(LengthSettings(min_words=minimum)).apply(doc, Counter()) != Drop("too_short")

    n = next(n for n in range(1000) if not kept(n + 1))
    assert kept(n)
    return n


def gopher_count(text: str) -> int:
    """The word count of Gopher's document-length rule, found the same way."""
    def rule(minimum: int) -> GopherQuality:
        others_off = dict.fromkeys(["max_doc_words", "min_avg_word_length", "max_avg_word_length",
                                    "max_symbol_word_ratio", "max_bullet_lines_ratio",
                                    "max_ellipsis_lines_ratio", "min_alpha_words_ratio", "min_stop_words"])
        return GopherQuality(GopherQualitySettings(min_doc_words=minimum, **others_off))

    doc = {"id": "d", "text": text, "metadata": {}}
    return next(n for n in range(1000) if rule(n + 1).apply(doc, Counter()) == Drop("gopher_short_doc"))


@pytest.mark.parametrize("name", TEXTS)
def test_length_step_shingles_and_quality_rules_count_the_same_words(name):
    text = TEXTS[name]
    split = words(text)
    assert length_count(text) == gopher_count(text) == len(shingle_words(text)) == len(split)
    assert shingle_words(text) == [fold(word) for word in split]
    if split:
        assert MinHasher(ngram=1).shingles(text) == {(fold(word),) for word in split}


def test_folding_never_changes_the_count():
    """NFKC would turn "½" into "1⁄2" (two words if split again) and full-width forms into ASCII:
    folding is applied per word, after splitting."""
    text = "½ ＡＢＣ１２３ Straße İstanbul 2024-05-01"
    assert shingle_words(text) == ["0⁄0", "abc0", "strasse", "i̇stanbul", "0", "0", "0"]
    assert len(shingle_words(text)) == count_words(text) == 7
