from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest
from pydantic import ValidationError

from lmforge.config import parse_overrides
from lmforge.data.curate.base import Drop
from lmforge.data.curate.steps.quality import Quality, QualitySettings
from lmforge.data.curate.steps.quality_gopher import (
    GopherQuality,
    GopherQualitySettings,
    GopherRepetition,
    GopherRepetitionSettings,
)
from lmforge.data.curate.steps.quality_web import (
    C4Quality,
    C4QualitySettings,
    FineWebQuality,
    FineWebQualitySettings,
    count_sentences,
)
from lmforge.data.synthetic import generate_corpus

SENTENCES = [
    "The river runs through the old town and past the market square.",
    "Farmers bring fresh vegetables to the stalls early every morning.",
    "Visitors often stop at the bakery that sits beside the stone bridge.",
    "In the afternoon the square fills with music and children playing games.",
    "Local historians say the market has existed for more than three hundred years.",
    "Each autumn a harvest festival draws crowds from the surrounding villages.",
]
GOOD = " ".join(SENTENCES)
MORE = ("A new library opened last spring in a former textile mill. Its reading rooms overlook the "
        "canal, and students fill them during exams. The council hopes that the building will attract "
        "young families to the quieter northern district.")
GERMAN = ("Der Fluss fließt durch die Altstadt und am Marktplatz vorbei. Die Bauern bringen jeden Morgen "
          "frisches Gemüse zu den Ständen. Besucher halten oft an der Bäckerei, die neben der Brücke "
          "steht. Am Nachmittag füllt sich der Platz mit Musik und spielenden Kindern. Historiker sagen, "
          "dass es den Markt seit mehr als dreihundert Jahren gibt. Jeden Herbst zieht ein Erntefest "
          "viele Menschen aus den umliegenden Dörfern an.")
CHINESE = ("河水穿过老城，流过市场广场。农民每天清晨把新鲜蔬菜送到摊位上。游客常常在石桥旁边的面包店停留。"
           "下午，广场上到处是音乐和玩耍的孩子。当地历史学家说，这个市场已经存在了三百多年。"
           "每年秋天，丰收节都会吸引周围村庄的人群。")


def _doc(text: str, lang: str | None = "en") -> dict:
    return {"id": "d", "text": text, "source": "test", "metadata": {"lang": lang} if lang else {}}


def _reason(step, text: str, lang: str | None = "en") -> str:
    result = step.apply(_doc(text, lang), Counter())
    return result.reason if isinstance(result, Drop) else "kept"


def test_defaults_are_the_published_thresholds():
    assert GopherQualitySettings().model_dump(exclude={"stop_words"}) == {
        "enabled": True, "min_doc_words": 50, "max_doc_words": 100_000, "min_avg_word_length": 3,
        "max_avg_word_length": 10, "max_symbol_word_ratio": 0.1, "max_bullet_lines_ratio": 0.9,
        "max_ellipsis_lines_ratio": 0.3, "min_alpha_words_ratio": 0.8, "min_stop_words": 2}
    english = ["the", "be", "to", "of", "and", "that", "have", "with"]
    assert GopherQualitySettings().stop_words["en"] == english
    assert GopherRepetitionSettings().model_dump() == {
        "enabled": True, "dup_line_frac": 0.3, "dup_para_frac": 0.3, "dup_line_char_frac": 0.2,
        "dup_para_char_frac": 0.2, "top_n_gram_frac": {2: 0.2, 3: 0.18, 4: 0.16},
        "dup_n_gram_frac": {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}}
    assert C4QualitySettings().model_dump() == {
        "enabled": True, "filter_no_terminal_punct": False, "min_words_per_line": 3, "max_word_length": 1000,
        "min_sentences": 5, "remove_citations": True, "filter_curly_bracket": True}
    assert FineWebQualitySettings().model_dump() == {
        "enabled": True, "line_punct_thr": 0.12, "short_line_length": 30, "short_line_thr": 0.67,
        "char_duplicates_ratio": 0.01, "new_line_ratio": 0.3}
    assert [g.name for g in Quality(QualitySettings()).groups] == \
        ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]


def test_thresholds_are_set_by_dotted_overrides():
    settings = QualitySettings.model_validate(
        parse_overrides(["gopher.min_doc_words=30", "c4.enabled=false"]))
    assert settings.gopher.min_doc_words == 30
    assert [g.name for g in Quality(settings).groups] == \
        ["gopher_repetition", "gopher_quality", "fineweb_quality"]
    with pytest.raises(ValidationError):
        QualitySettings.model_validate({"gopher": {"min_words": 30}})


def test_clean_prose_passes_every_group():
    for step in Quality(QualitySettings()).groups:
        assert _reason(step, GOOD) == "kept", step.name


@pytest.mark.parametrize(("text", "settings", "reason"), [
    ("Too short to be a page.", {}, "gopher_short_doc"),
    (GOOD, {"max_doc_words": 20}, "gopher_long_doc"),
    (" ".join(["it is an ox to be of me"] * 10), {}, "gopher_below_avg_threshold"),
    (" ".join(f"internationalisation{i}" for i in range(60)), {}, "gopher_above_avg_threshold"),
    (GOOD + " #tag" * 10, {}, "gopher_too_many_hashes"),
    (GOOD + " wait..." * 10, {}, "gopher_too_many_ellipsis"),
    ("\n".join("• " + s for s in SENTENCES), {}, "gopher_too_many_bullets"),
    ("\n".join(s + ".." for s in SENTENCES), {}, "gopher_too_many_end_ellipsis"),
    (GOOD + " " + " ".join(str(n) for n in range(100, 140)), {}, "gopher_below_alpha_threshold"),
    ("Visitors praise bakery beside stone bridge near market square. " * 6, {}, "gopher_enough_stop_words"),
])
def test_each_gopher_quality_rule_names_its_drop(text, settings, reason):
    assert _reason(GopherQuality(GopherQualitySettings(**settings)), text) == reason


def test_stop_words_follow_the_documents_language():
    step = GopherQuality(GopherQualitySettings())
    assert _reason(step, GERMAN, "de") == "kept"
    assert _reason(step, GERMAN, "en") == "gopher_enough_stop_words"
    assert _reason(step, GERMAN, None) == "gopher_enough_stop_words"     # no language: English
    counters = Counter()
    assert step.apply(_doc(GERMAN, "nl"), counters) == [_doc(GERMAN, "nl")]
    assert counters == Counter(stop_words_unknown_lang=1)


def test_chinese_counts_characters_and_skips_word_length_rules():
    assert _reason(GopherQuality(GopherQualitySettings()), CHINESE, "zh") == "kept"
    assert _reason(GopherQuality(GopherQualitySettings()), CHINESE[:40], "zh") == "gopher_short_doc"
    assert _reason(Quality(QualitySettings()), CHINESE, "zh-cn") == "kept"


@pytest.mark.parametrize(("text", "reason"), [
    ("\n".join(SENTENCES + SENTENCES[:3]), "dup_line_frac"),
    ("\n\n".join(SENTENCES[:3] + SENTENCES[:2]), "dup_para_frac"),
    ("\n\n".join([GOOD, GOOD, "One more line.", "And another.", "A third.", "A fourth one."]),
     "dup_para_char_frac"),
    ("\n".join([GOOD, GOOD, "One more line.", "And another.", "A third.", "A fourth one."]),
     "dup_line_char_frac"),
    (GOOD + " the market" * 15, "top_2_gram"),
    (GOOD + " " + SENTENCES[4] + " " + SENTENCES[4], "duplicated_5_n_grams"),
    (CHINESE + "在广场上" * 30, "top_2_gram"),                     # 2 words: 4 characters
])
def test_each_repetition_rule_names_its_drop(text, reason):
    assert _reason(GopherRepetition(GopherRepetitionSettings()), text) == reason


def test_c4_removes_boilerplate_lines_and_keeps_paragraphs():
    text = (f"{SENTENCES[0]} {SENTENCES[1]}[1]\nPlease enable JavaScript to view the comments.\n"
            f"We use cookies to improve your experience.\nMenu\n\n{' '.join(SENTENCES[2:])}[citation needed]")
    doc, counters = _doc(text), Counter()
    [out] = C4Quality(C4QualitySettings()).apply(doc, counters)
    assert out["text"] == f"{SENTENCES[0]} {SENTENCES[1]}\n\n{' '.join(SENTENCES[2:])}"
    assert doc["text"] == text
    assert counters == Counter(c4_lines_javascript=1, c4_lines_policy=1, c4_lines_too_few_words=1)


@pytest.mark.parametrize(("text", "settings", "reason"), [
    (GOOD + " Lorem ipsum dolor sit amet.", {}, "lorem_ipsum"),
    (GOOD + " function() { return 1; }", {}, "curly_bracket"),
    (GOOD + " {}", {"filter_curly_bracket": False}, "kept"),
    (" ".join(SENTENCES[:4]), {}, "too_few_sentences"),
    ("\n\n".join(SENTENCES[:4]), {}, "too_few_sentences"),
    ("\n".join(s.rstrip(".") for s in SENTENCES), {"filter_no_terminal_punct": True}, "too_few_sentences"),
    ("\n".join(s.rstrip(".") for s in SENTENCES), {}, "kept"),
])
def test_c4_page_rules(text, settings, reason):
    assert _reason(C4Quality(C4QualitySettings(**settings)), text) == reason


@pytest.mark.parametrize(("line", "n"), [
    ("One. Two! Three?", 3), ("One. Two", 2), ("No end mark", 1), ("Pi is 3.14 today.", 1),
    ('He said "stop." Then left.', 2), ("第一句。第二句！", 2), ("", 0),
])
def test_count_sentences(line, n):
    assert count_sentences(line) == n


@pytest.mark.parametrize(("text", "reason"), [
    ("\n".join(s.rstrip(".") for s in SENTENCES), "line_punct_ratio"),
    ("\n".join(f"Short line number {i}." for i in range(10)), "short_line_ratio"),
    ("\n".join(SENTENCES + SENTENCES[:1]), "char_dup_ratio"),
    ("\n".join(f"Internationalisation {w}ification." for w in ("cod", "mod", "typ", "unif")), "list_ratio"),
    ("\n\n".join(SENTENCES), "kept"),
])
def test_each_fineweb_rule_names_its_drop(text, reason):
    assert _reason(FineWebQuality(FineWebQualitySettings()), text) == reason


def test_quality_reports_the_first_failing_group_and_passes_c4s_rewrite_on():
    step = Quality(QualitySettings())
    assert _reason(step, "\n".join(SENTENCES * 3)) == "dup_line_frac"   # repetition runs first
    text = GOOD + "\nEnable JavaScript to see the map of the town.\n\n" + MORE
    [out] = step.apply(_doc(text), Counter())
    assert "JavaScript" not in out["text"] and "JavaScript" in text


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[tuple[dict, dict]]:
    """The built-in corpus with `lang` set as the language step would set it."""
    root = tmp_path_factory.mktemp("quality_corpus")
    generate_corpus(root, seed=0, size_mb=0.3)
    with gzip.open(root / "documents.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    truth = json.loads((root / "truth.json").read_text(encoding="utf-8"))["documents"]
    return [({**doc, "metadata": {"lang": t["lang"]}}, t) for doc, t in zip(docs, truth, strict=True)]


def test_planted_junk_fails_and_clean_text_of_every_language_passes(corpus):
    step = Quality(QualitySettings())
    dropped: dict[str, list[bool]] = {}
    for doc, truth in corpus:
        group = truth["lang"] if truth["kind"] == "normal" else "planted"
        dropped.setdefault(group, []).append(isinstance(step.apply(doc, Counter()), Drop))
    rate = {group: sum(flags) / len(flags) for group, flags in dropped.items()}
    assert rate.pop("planted") >= 0.95
    assert sorted(rate) == ["de", "en", "es", "fr", "zh"]
    assert all(share <= 0.4 for share in rate.values()), rate
    normal = [flag for group in rate for flag in dropped[group]]
    assert sum(normal) / len(normal) <= 0.2


def test_real_paragraphs_mostly_pass(shared_data):
    """Wikipedia paragraphs are not pages: C4's five-sentence page minimum removes the shorter
    ones, so the other rules are checked with it off as well."""
    raw = (shared_data / "wikitext2" / "raw" / "wiki.test.raw").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in raw.splitlines()
                  if len(p.split()) > 50 and not p.strip().startswith("=")]
    no_page_minimum = QualitySettings.model_validate({"c4": {"min_sentences": 0}})
    for settings, share in ((QualitySettings(), 0.5), (no_page_minimum, 0.9)):
        step = Quality(settings)
        kept = sum(not isinstance(step.apply(_doc(p), Counter()), Drop) for p in paragraphs)
        assert kept / len(paragraphs) >= share
