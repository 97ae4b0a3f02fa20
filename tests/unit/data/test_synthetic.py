"""The built-in corpus: deterministic, multilingual, and its truth file tells the truth."""

from __future__ import annotations

import gzip
import ipaddress
import json
import re

import pytest

from lmforge.data import read_documents
from lmforge.data.curate.dedup.minhash import MinHasher
from lmforge.data.synthetic import generate_corpus

FILES = ("documents.jsonl.gz", "truth.json", "classification.tsv", "ner.conll")
TOPICS = {"sports", "finance", "tech", "health"}
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("synthetic")
    stats = generate_corpus(out, seed=0, size_mb=0.6)
    with gzip.open(out / "documents.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    return {"dir": out, "stats": stats, "docs": docs, "truth": truth["documents"], "header": truth,
            "by_id": {d["id"]: d["text"] for d in docs}}


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in reversed(number) if c.isdigit()]
    doubled = [d * 2 - 9 if d * 2 > 9 else d * 2 for d in digits[1::2]]
    return (sum(digits[0::2]) + sum(doubled)) % 10 == 0


def shingles(text: str, lang: str) -> set[tuple[str, ...]]:
    tokens = [c for c in text if not c.isspace()] if lang == "zh" else text.split()
    return {tuple(tokens[i:i + 5]) for i in range(len(tokens) - 4)}


def test_same_seed_same_bytes_other_seed_other_text(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_corpus(tmp_path / name, seed=seed, size_mb=0.2)
    for file in FILES:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    assert (tmp_path / "a" / FILES[0]).read_bytes() != (tmp_path / "c" / FILES[0]).read_bytes()


def test_size_languages_kinds_and_stats(corpus):
    stats, truth = corpus["stats"], corpus["truth"]
    assert stats == corpus["header"]["stats"]
    assert len(corpus["docs"]) == len(truth) == stats["documents"]
    assert [d["id"] for d in corpus["docs"]] == [t["id"] for t in truth]
    assert 600_000 <= stats["bytes"] < 620_000
    assert {"en", "de", "fr", "es", "zh"} <= set(stats["languages"])
    chinese = [corpus["by_id"][t["id"]] for t in truth if t["lang"] == "zh" and t["kind"] == "normal"]
    assert chinese and all(CJK.search(text) for text in chinese)
    assert set(stats["kinds"]) == {"normal", "boilerplate", "low_quality"}
    assert set(stats["defects"]) == {"repeated_lines", "symbol_soup", "too_short"}
    assert all((t["label"] in TOPICS) == (t["kind"] == "normal") for t in truth)


def test_folder_reads_as_a_dataset(corpus):
    assert sum(1 for _ in read_documents([corpus["dir"]])) == len(corpus["docs"])


def test_planted_duplicates(corpus):
    truth, texts = corpus["truth"], corpus["by_id"]
    order = {t["id"]: i for i, t in enumerate(truth)}
    exact = [t for t in truth if t["exact_dup_of"]]
    near = [t for t in truth if t["near_dup_of"]]
    assert len(exact) >= 10 and len(near) >= 10
    for t in exact:
        assert texts[t["id"]] == texts[t["exact_dup_of"]]
        assert order[t["exact_dup_of"]] < order[t["id"]]
    hasher = MinHasher()
    for t in near:
        a, b = shingles(texts[t["id"]], t["lang"]), shingles(texts[t["near_dup_of"]], t["lang"])
        assert 0.7 <= len(a & b) / len(a | b) <= 0.99, t["id"]
        assert texts[t["id"]] != texts[t["near_dup_of"]]
        # The stated similarity is that of the shingles near-dedup hashes, not of some other split.
        a, b = hasher.shingles(texts[t["id"]]), hasher.shingles(texts[t["near_dup_of"]])
        assert t["near_dup_jaccard"] == round(len(a & b) / len(a | b), 4) <= 0.92, t["id"]


def test_pii_and_entities_sit_at_their_offsets(corpus):
    texts = corpus["by_id"]
    seen = set()
    for t in corpus["truth"]:
        for item in t["pii"]:
            assert texts[t["id"]][item["start"]:item["end"]] == item["value"]
            seen.add(item["type"])
        for item in t["entities"]:
            assert texts[t["id"]][item["start"]:item["end"]] == item["text"]
    assert seen == {"person", "email", "phone", "ipv4", "ipv6", "card"}


def test_pii_values_are_well_formed(corpus):
    pii = [p for t in corpus["truth"] for p in t["pii"]]
    for p in pii:
        if p["type"] == "card":
            assert len(re.sub(r"\D", "", p["value"])) == 16 and luhn_valid(p["value"]), p["value"]
        elif p["type"] == "email":
            assert re.fullmatch(r"[a-z0-9.]+@[a-z.]+\.[a-z]+", p["value"]), p["value"]
        elif p["type"] == "ipv4":
            assert ipaddress.ip_address(p["value"]).version == 4
        elif p["type"] == "ipv6":
            assert ipaddress.ip_address(p["value"]).version == 6
        elif p["type"] == "phone":
            assert len(re.sub(r"\D", "", p["value"])) >= 9
    assert any(p["value"].startswith("+86") for p in pii if p["type"] == "phone")


def test_classification_tsv(corpus):
    lines = (corpus["dir"] / "classification.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "text\tlabel"
    labels = {t["id"]: t["label"] for t in corpus["truth"]}
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) >= 100 and all(len(row) == 2 for row in rows)
    assert {label for _, label in rows} == TOPICS
    for text, label in rows[:50]:
        owners = [i for i, doc in corpus["by_id"].items() if doc.startswith(text)]
        assert owners and all(labels[i] == label for i in owners)


def test_ner_conll(corpus):
    blocks = (corpus["dir"] / "ner.conll").read_text(encoding="utf-8").strip("\n").split("\n\n")
    entities = {(e["type"], re.sub(r"\s", "", e["text"])) for t in corpus["truth"] for e in t["entities"]}
    found = set()
    for block in blocks:
        pairs = [line.split("\t") for line in block.split("\n")]
        assert all(len(pair) == 2 for pair in pairs)
        current: list[str] = []
        for i, (token, tag) in enumerate(pairs + [["", "O"]]):
            assert re.fullmatch(r"O|[BI]-(PER|ORG|LOC)", tag), tag
            if tag.startswith("I-"):
                assert i > 0 and pairs[i - 1][1][2:] == tag[2:]
                current.append(token)
                continue
            if current:
                found.add((pairs[i - 1][1][2:], "".join(current)))
            current = [token] if tag.startswith("B-") else []
    assert len(blocks) >= 100
    assert {kind for kind, _ in found} == {"PER", "ORG", "LOC"}
    assert found <= entities
