from __future__ import annotations

from collections import Counter

from lmforge.data.curate.base import Drop
from lmforge.data.curate.steps.length import Length, LengthSettings, split_text, truncate_text
from lmforge.data.text import words


def _doc(text: str) -> dict:
    return {"id": "d", "text": text, "source": "test", "metadata": {"lang": "en"}}


def _sentence(k: int, n: int = 10) -> str:
    """A sentence of n words whose words are unique to it, so that order can be checked."""
    return " ".join(f"w{k}x{i}" for i in range(n)) + "."


def test_short_documents_are_dropped_at_the_minimum():
    step = Length(LengthSettings())
    assert step.apply(_doc("Contact"), Counter()) == Drop("too_short")
    assert step.apply(_doc("one two three four"), Counter()) == Drop("too_short")
    doc = _doc("one two three four five")
    assert step.apply(doc, Counter()) == [doc]


def test_truncate_keeps_the_first_max_words_words():
    text = " ".join(_sentence(k) for k in range(60))
    counters = Counter()
    [out] = Length(LengthSettings(mode="truncate")).apply(_doc(text), counters)
    assert words(out["text"]) == words(text)[:512]
    assert text.startswith(out["text"]) and out["id"] == "d"
    assert counters == Counter(truncated_words=600 - 512)


def test_split_keeps_every_word_in_order_and_marks_the_chunks():
    paragraphs = ["\n".join(_sentence(p * 10 + k) for k in range(7)) for p in range(17)]
    doc = _doc("\n\n".join(paragraphs))
    counters = Counter()
    chunks = Length(LengthSettings()).apply(doc, counters)
    assert [w for c in chunks for w in words(c["text"])] == words(doc["text"])
    assert all(len(words(c["text"])) <= 512 for c in chunks)
    assert [c["id"] for c in chunks] == [f"d#{k}" for k in range(len(chunks))]
    assert all(c["metadata"] == {"lang": "en", "parent_id": "d", "chunk": k} for k, c in enumerate(chunks))
    assert all(c["text"].endswith(".") for c in chunks)          # cut at boundaries, not mid-sentence
    assert counters == Counter(split_documents=1, chunks=len(chunks)) and len(chunks) == 3
    assert doc["metadata"] == {"lang": "en"}


def test_split_prefers_paragraphs_and_balances_the_chunks():
    paragraphs = [" ".join(_sentence(p * 10 + k) for k in range(10)) for p in range(6)]   # 6 x 100 words
    chunks = split_text("\n\n".join(paragraphs), 512)
    assert chunks == ["\n\n".join(paragraphs[:3]), "\n\n".join(paragraphs[3:])]


def test_split_cuts_inside_a_sentence_only_when_it_alone_is_too_long():
    text = " ".join(f"w{i}" for i in range(1100))
    chunks = split_text(text, 512)
    assert [len(words(c)) for c in chunks] == [512, 512, 76]
    assert " ".join(chunks) == text


def test_split_cuts_chinese_at_sentence_ends():
    sentence = "研究团队在武汉检查了新的疫苗。"          # 14 characters, 14 words
    chunks = split_text(sentence * 10, 50)
    assert all(c.endswith("。") and len(words(c)) <= 50 for c in chunks)
    assert "".join(chunks) == sentence * 10


def test_truncate_text_leaves_short_text_alone():
    assert truncate_text("a b c", 5) == "a b c"
    assert truncate_text("a b, c d", 2) == "a b,"
