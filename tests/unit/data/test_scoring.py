"""Scoring a curation against planted truth, on a hand-made dataset whose figures are worked out by hand.

Eighteen documents in the truth: originals o1-o5, exact copies e1-e3 (of o1, o2, o3), near copies
n1-n4 (of o1, o2, o1, o3), bad documents b1-b3 and PII carriers p1-p3. What the "curation" did:

- kept: o1 (a stray <EMAIL>), o2 (a stray <PHONE>, language wrong), e2 (a missed copy), b3 (a
  missed bad document, no language), p1, p2, p3 (split in two chunks), and p1~aug0, an augmented
  copy that scoring must ignore;
- removed by dedup: e1, e3 and n2 as exact duplicates, n1, n3, o4 and o5 as near duplicates;
- removed by filters: o3 and b1 (quality), n4 (language, language wrong), b2 (length), and x9
  (quality), a document the truth does not know; one malformed record (read).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.data.curate.shards import removed_record, write_shard
from lmforge.data.synthetic.scoring import find_truth, score_against_truth


def truth_record(doc_id: str, kind: str = "normal", lang: str = "en", exact: str | None = None,
                 near: str | None = None, pii: tuple[tuple[str, str], ...] = ()) -> dict:
    return {"id": doc_id, "lang": lang, "kind": kind, "defect": None, "exact_dup_of": exact,
            "near_dup_of": near, "pii": [{"type": t, "value": v, "start": 0, "end": len(v)} for t, v in pii]}


TRUTH = [
    *(truth_record(f"o{i}") for i in range(1, 6)),
    truth_record("e1", exact="o1"), truth_record("e2", exact="o2"), truth_record("e3", exact="o3"),
    truth_record("n1", near="o1"), truth_record("n2", near="o2"), truth_record("n3", near="o1"),
    truth_record("n4", near="o3"),
    truth_record("b1", kind="boilerplate"), truth_record("b2", kind="low_quality"),
    truth_record("b3", kind="low_quality"),
    truth_record("p1", pii=(("email", "ada@example.org"), ("phone", "+44 20 7946 0958"),
                            ("ipv4", "10.1.2.3"), ("person", "Ada"))),
    truth_record("p2", pii=(("email", "b@example.org"), ("email", "c@example.org"), ("ipv6", "2001:db8::1"))),
    truth_record("p3", lang="de", pii=(("email", "p3@example.de"), ("phone", "+49 89 1234567"))),
]


def doc(doc_id: str, text: str = "Some text.", lang: str | None = "en", **metadata) -> dict:
    return {"id": doc_id, "text": text, "source": "test",
            "metadata": {**({"lang": lang} if lang else {}), **metadata}}


KEPT = [
    doc("o1", "A plain note with a stray <EMAIL> in it."),
    doc("o2", "Call <PHONE> now.", lang="de"),
    doc("e2"), doc("b3", lang=None),
    doc("p1", "Write to <EMAIL> or call <PHONE> from 10.1.2.3, Ada."),
    doc("p1~aug0", "<EMAIL> <EMAIL> <PHONE> 10.1.2.3", lang="fr", augmented_from="p1"),
    doc("p2", "<EMAIL> and <EMAIL> via <IP> or <IP>."),
    doc("p3#0", "Schreib an <EMAIL> bitte.", lang="de", parent_id="p3", chunk=0),
    doc("p3#1", "Ruf +49 89 1234567 an.", lang="de", parent_id="p3", chunk=1),
]
REMOVED = [
    *(removed_record(doc(i), "dedup", "exact_duplicate") for i in ("e1", "e3", "n2")),
    *(removed_record(doc(i), "dedup", "near_duplicate") for i in ("n1", "n3", "o4", "o5")),
    removed_record(doc("o3"), "quality", "gopher_stop_words"),
    removed_record(doc("b1"), "quality", "dup_line_frac"),
    removed_record(doc("x9"), "quality", "dup_line_frac"),
    removed_record(doc("n4", lang="fr"), "language", "language_not_kept"),
    removed_record(doc("b2"), "length", "too_short"),
    removed_record({"id": "bad.jsonl:line 3", "text": "", "source": "bad.jsonl", "metadata": {}}, "read",
                   "malformed", location="line 3", error="not JSON"),
]


@pytest.fixture(scope="module")
def scores(tmp_path_factory) -> dict:
    root: Path = tmp_path_factory.mktemp("scoring")
    (root / "raw").mkdir()
    (root / "raw" / "truth.json").write_text(json.dumps({"seed": 0, "documents": TRUTH}), encoding="utf-8")
    assert find_truth([root / "raw" / "documents.jsonl.gz"]) == root / "raw" / "truth.json"
    assert find_truth([root]) is None
    dataset = root / "dataset"
    for folder in ("shards", "removed"):
        (dataset / folder).mkdir(parents=True)
    write_shard(dataset / "shards" / "shard_00000.jsonl.gz", KEPT[:5])
    write_shard(dataset / "shards" / "shard_00001.jsonl.gz", KEPT[5:])
    write_shard(dataset / "removed" / "part_00000.jsonl.gz", REMOVED[:6])
    write_shard(dataset / "removed" / "part_00001.jsonl.gz", REMOVED[6:])
    return score_against_truth(root / "raw" / "truth.json", dataset)


def test_exact_dedup_counts_only_what_reached_dedup(scores):
    """Planted e1, e2, e3; e3's original o3 was filtered, so e3 is not reached (eligible: e1, e2).
    Predicted e1, e3, n2: recall = |{e1}| / |{e1, e2}| = 1/2; precision = |{e1, e3}| / 3 (e3 is a
    true copy, even though its original went earlier)."""
    assert scores["exact_dedup"] == {"planted": 3, "not_reached": 1, "removed": 3,
                                     "recall": 0.5, "precision": 0.6667}


def test_near_dedup(scores):
    """Planted n1-n4; n4 was removed by the language filter (not reached), n2 reached dedup (removed
    there as an exact copy, so missed as near). Predicted n1, n3, o4, o5: recall 2/3, precision 2/4."""
    assert scores["near_dedup"] == {"planted": 4, "not_reached": 1, "removed": 4,
                                    "recall": 0.6667, "precision": 0.5}


def test_quality_filters(scores):
    """Removed by a filter: o3, n4, b1, b2 and x9 (unknown to the truth, so outside the precision).
    Bad: b1, b2, b3. Recall 2/3; precision 2 / |{o3, n4, b1, b2}| = 0.5; normal removed 2 of 15."""
    assert scores["quality"] == {"planted_bad": 3, "recall": 0.6667, "precision": 0.5,
                                 "normal_removed": 0.1333}


def test_pii_recall_and_placeholder_precision(scores):
    """Kept text, with p3's chunks joined and the augmented copy left out. Planted: email 4 (p1, p2 x2,
    p3; all gone), phone 2 (p1 gone, p3 still there), ipv4 1 (p1, still there), ipv6 1 (p2, gone);
    the person name is not a regex-tier type. Placeholders: <EMAIL> 5 (o1's is stray) -> 4/5;
    <PHONE> 2 (o2's is stray) -> 1/2; <IP> 2 in p2 for one planted address -> 1/2; <CARD> none."""
    pii = scores["pii"]
    assert pii["planted"] == {"email": 4, "phone": 2, "ipv4": 1, "ipv6": 1}
    assert pii["recall"] == {"email": 1.0, "ipv4": 0.0, "ipv6": 1.0, "phone": 0.5}
    assert pii["placeholder_precision"] == {"<CARD>": None, "<EMAIL>": 0.8, "<IP>": 0.5, "<PHONE>": 0.5}


def test_language_accuracy(scores):
    """Documents in the truth whose metadata has a language: 6 kept (b3 has none; p3 counts once) and
    11 removed (x9 and the malformed record are not in the truth). Wrong: o2 and n4. 15/17."""
    assert scores["language_accuracy"] == 0.8824
