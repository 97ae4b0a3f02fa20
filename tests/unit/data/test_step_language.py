"""Language ID: both backends are accurate, langdetect is deterministic, the filter keeps and drops."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from pydantic import ValidationError

from lmforge.data import read_documents
from lmforge.data.curate.base import Drop
from lmforge.data.curate.langid import UNKNOWN, LangdetectDetector, load_detector, normalise_code
from lmforge.data.curate.steps.language import LanguageFilter, LanguageSettings
from lmforge.data.synthetic import generate_corpus

BACKENDS = ("fasttext", "langdetect")
MIN_TATOEBA_ACCURACY = {"fasttext": 0.9, "langdetect": 0.85}
SYMBOL_SOUP = "#$%& *+=<> 0123 ~^| {}[] 42 !!"


def doc(text: str, **metadata) -> dict:
    return {"id": "d", "text": text, "source": "test", "metadata": metadata}


@pytest.fixture(scope="module")
def tatoeba(shared_data) -> list[tuple[str, str]]:
    """15 sentences per language, spread over each language's 1,000."""
    path = shared_data / "langid_tatoeba" / "langid_tatoeba_21lang.tsv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(row["lang_iso639_1"], row["text"]) for row in rows if int(row["line"]) % 67 == 1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[dict], dict[str, dict]]:
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(out, seed=0, size_mb=0.3)
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))["documents"]
    return list(read_documents(out / "documents.jsonl.gz")), {t["id"]: t for t in truth}


@pytest.mark.parametrize("backend", BACKENDS)
def test_tatoeba_accuracy(backend, tatoeba):
    assert len(tatoeba) == 21 * 15
    detector = load_detector(backend)
    correct = sum(detector.detect(text)[0] == lang for lang, text in tatoeba)
    assert correct / len(tatoeba) > MIN_TATOEBA_ACCURACY[backend]


@pytest.mark.parametrize("backend", BACKENDS)
def test_codes_agree_across_backends(backend):
    lang, score = load_detector(backend).detect("我们明天早上在火车站见面，然后一起去博物馆参观新的展览。")
    assert lang == "zh" and 0.0 < score <= 1.0
    assert normalise_code("zh-TW") == normalise_code("zh-cn") == "zh"


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_letters_is_unknown_with_zero_confidence(backend):
    assert load_detector(backend).detect(SYMBOL_SOUP) == (UNKNOWN, 0.0)
    assert load_detector(backend).detect("") == (UNKNOWN, 0.0)


def test_multiline_text_and_long_text_prefix():
    detector = load_detector("fasttext", 200)
    english = "The weather was lovely, so we walked along the river to the old town.\n" * 3
    assert detector.detect(english + "Der Hund schläft im Garten unter dem Baum. " * 100)[0] == "en"


def test_langdetect_is_deterministic_across_orders_and_instances(tatoeba):
    # Short and ambiguous texts are the ones whose answer depends on langdetect's sampling.
    ambiguous = ["ok", "hola", "ciao bella", "no", "gut", "pizza pasta", "internet"]
    texts = ambiguous + [text for _, text in tatoeba[::9]]
    one, other = LangdetectDetector(), LangdetectDetector()
    forwards = [one.detect(t) for t in texts]
    backwards = [other.detect(t) for t in reversed(texts)][::-1]
    assert forwards == backwards == [other.detect(t) for t in texts]


def test_langdetect_is_deterministic_across_processes():
    code = ("import json; from lmforge.data.curate.langid import LangdetectDetector; "
            "d = LangdetectDetector(); "
            "print(json.dumps([d.detect(t) for t in ['ok', 'ciao bella', 'pizza pasta', 'gut']]))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert runs[0] == runs[1] and runs[0].startswith("[[")


@pytest.mark.parametrize("backend", BACKENDS)
def test_builtin_corpus_languages_are_found(backend, corpus):
    docs, truth = corpus
    step, counters = LanguageFilter(LanguageSettings(backend=backend)), Counter()
    normal = [d for d in docs if truth[d["id"]]["kind"] == "normal"]
    results = [step.apply(d, counters) for d in normal]
    correct = sum(not isinstance(r, Drop) and r[0]["metadata"]["lang"] == truth[d["id"]]["lang"]
                  for d, r in zip(normal, results, strict=True))
    assert correct / len(normal) > 0.95
    assert sum(counters.values()) == len(normal)


def test_symbol_soup_in_corpus_is_dropped_below_threshold(corpus):
    docs, truth = corpus
    soup = [d for d in docs if truth[d["id"]]["defect"] == "symbol_soup"]
    counters: Counter = Counter()
    assert soup and all(LanguageFilter().apply(d, counters) == Drop("lang_below_threshold") for d in soup)
    assert counters == {"lang_unknown": len(soup)}


def test_filter_tags_kept_documents_without_mutating_input():
    original = doc("Die Regierung hat gestern neue Regeln für den Verkehr in der Stadt beschlossen.", k=1)
    snapshot = json.dumps(original)
    counters: Counter = Counter()
    [out] = LanguageFilter(LanguageSettings(keep=["de", "fr"])).apply(original, counters)
    assert json.dumps(original) == snapshot
    assert out["metadata"]["k"] == 1 and out["metadata"]["lang"] == "de"
    assert 0.65 <= out["metadata"]["lang_score"] <= 1.0
    assert counters == {"lang_de": 1}


def test_filter_drops_unwanted_and_unsure_languages():
    step, counters = LanguageFilter(LanguageSettings(keep=["de"])), Counter()
    english = doc("The government approved new rules for traffic in the city centre yesterday.")
    assert step.apply(english, counters) == Drop("lang_not_kept")
    assert step.apply(doc("hello world"), counters) == Drop("lang_below_threshold")  # lite model: ~0.2
    assert LanguageFilter(LanguageSettings(min_confidence=0.0)).apply(doc("hello world"), counters) != Drop(
        "lang_below_threshold")
    assert counters["lang_en"] == 3


def test_settings_validate_backend_codes_and_threshold():
    assert LanguageSettings(keep=["zh-CN", "EN"]).keep == ["zh", "en"]
    with pytest.raises(ValidationError, match="unknown language backend 'cld9'"):
        LanguageSettings(backend="cld9")
    with pytest.raises(ValidationError):
        LanguageSettings(min_confidence=1.5)
    with pytest.raises(ValidationError):
        LanguageSettings(thresh=0.5)
