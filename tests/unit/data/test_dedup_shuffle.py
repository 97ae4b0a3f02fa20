"""The dedup shuffle decides exactly as the local pass, whatever the partition count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmforge.data import read_documents
from lmforge.data.curate.dedup import shuffle as dedup_shuffle
from lmforge.data.curate.dedup import stage as dedup_stage
from lmforge.data.curate.dedup.shuffle import Shuffle
from lmforge.data.curate.dedup.step import DedupSettings
from lmforge.data.synthetic import generate_corpus


def in_process(partitions: int) -> Shuffle:
    """The shuffle Ray runs, in this process: every map, then one reduce per partition."""
    def shuffle(map_fn, calls, reduce_fn):
        outputs = [map_fn(*call, partitions) for call in calls]
        return [reduce_fn(*[output[p] for output in outputs]) for p in range(partitions)]
    return shuffle


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> list[dict]:
    """The built-in corpus with its planted duplicates, plus re-spaced, re-cased copies of its first
    near duplicates at the end: exact copies of documents that are themselves near duplicates."""
    folder = tmp_path_factory.mktemp("corpus")
    generate_corpus(folder, seed=4, size_mb=0.3)
    docs = list(read_documents([folder / "documents.jsonl.gz"]))
    truth = json.loads((folder / "truth.json").read_text())["documents"]
    planted = {t["id"] for t in truth if t["near_dup_of"]}
    near = [d for d in docs if d["id"] in planted][:5]
    assert near, "the corpus plants near duplicates"
    return docs + [{**d, "id": d["id"] + "-copy", "text": "  " + d["text"].upper()} for d in near]


def write_key_files(folder: Path, docs: list[dict], settings: DedupSettings, size: int = 40) -> list[Path]:
    files = [folder / f"shard_{k:05d}.keys.npz" for k in range(-(-len(docs) // size) + 1)]
    for k, path in enumerate(files):  # the last one is empty, as a shard whose documents all went
        dedup_stage.write_keys(path, docs[k * size:(k + 1) * size], settings)
    return files


@pytest.mark.parametrize("settings", [DedupSettings(), DedupSettings(exact=False), DedupSettings(near=False)],
                         ids=["exact+near", "near", "exact"])
def test_shuffle_writes_the_local_decision_for_any_partition_count(documents, settings, tmp_path):
    files = write_key_files(tmp_path, documents, settings)
    dedup_stage.decide(files, tmp_path / "local.json")
    expected = (tmp_path / "local.json").read_text()
    assert dedup_stage.load_decisions(tmp_path / "local.json"), "the corpus has duplicates to find"
    for partitions in (1, 2, 5):
        out = tmp_path / f"shuffled_{partitions}.json"
        dedup_shuffle.decide(files, out, in_process(partitions))
        assert out.read_text() == expected, partitions


def test_exact_copies_of_near_duplicates_name_the_cluster_survivor(documents, tmp_path):
    files = write_key_files(tmp_path, documents, DedupSettings())
    dedup_shuffle.decide(files, tmp_path / "dedup.json", in_process(3))
    decisions = dedup_stage.load_decisions(tmp_path / "dedup.json")
    originals = [d["id"].removesuffix("-copy") for d in documents if d["id"].endswith("-copy")]
    assert any(decisions.get(o, {}).get("reason") == "near_duplicate" for o in originals)
    for original in originals:
        survivor = decisions[original]["kept_id"] if original in decisions else original
        assert decisions[original + "-copy"] == {"reason": "exact_duplicate", "kept_id": survivor}


def test_exact_copies_leave_the_buckets_before_they_are_linked(tmp_path):
    """One bucket Z A X | A' W: linked to its previous member, A' would join W to A (similar), which
    the local pass, linking Z A X W (W to Z and X, both dissimilar), never does."""
    base = np.arange(112, dtype=np.uint64)
    signatures = {"Z": base + 1000, "A": base, "X": base + 2000, "W": np.r_[base[:100], base[100:] + 3000]}
    shards = [["Z", "A", "X"], ["A'", "W"]]
    files = [tmp_path / f"shard_{k}.keys.npz" for k in range(2)]
    for path, ids in zip(files, shards, strict=True):
        np.savez(path, ids=np.array(ids), exact=np.array([i.strip("'").encode() for i in ids], dtype="S16"),
                 signatures=np.stack([signatures[i.strip("'")] for i in ids]),
                 bands=np.full((len(ids), 1), 7, dtype=np.uint64))
    dedup_stage.decide(files, tmp_path / "local.json")
    dedup_shuffle.decide(files, tmp_path / "shuffled.json", in_process(2))
    expected = {"A'": {"reason": "exact_duplicate", "kept_id": "A"}}
    assert dedup_stage.load_decisions(tmp_path / "local.json") == expected
    assert dedup_stage.load_decisions(tmp_path / "shuffled.json") == expected


def test_no_shards_means_no_duplicates(tmp_path):
    dedup_shuffle.decide([], tmp_path / "dedup.json", in_process(2))
    assert dedup_stage.load_decisions(tmp_path / "dedup.json") == {}
