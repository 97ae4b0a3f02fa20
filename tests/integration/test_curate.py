"""Curation end to end on the built-in corpus and on real web data: accounting, truth, resume."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from processes import run_bounded

from lmforge.config import ConfigError, load
from lmforge.data import DataError
from lmforge.data.curate import CurateConfig, curate
from lmforge.data.curate.shards import read_shard
from lmforge.data.synthetic import generate_corpus, truth_scorer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("raw")
    generate_corpus(folder, seed=2, size_mb=0.6)
    return folder / "documents.jsonl.gz"


def config(sources: list[Path], out: Path, **extra) -> CurateConfig:
    return CurateConfig(sources=sources, out=out, shard_docs=150, **extra)


def removed_records(out: Path) -> list[dict]:
    return [r for p in sorted((out / "removed").glob("*.jsonl.gz")) for r in read_shard(p)]


@pytest.fixture(scope="module")
def curated(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("curated") / "ds"
    return curate(config([corpus], out, workers=2), say=lambda _: None, scorer=truth_scorer([corpus]))


def test_every_document_is_kept_or_removed_with_a_reason(curated, corpus):
    with gzip.open(corpus, "rt") as handle:
        n_raw = sum(1 for _ in handle)
    stats = json.loads((curated.out / "stats.json").read_text())
    assert stats["input_documents"] == n_raw == curated.n_input
    assert stats["kept_documents"] + stats["removed_documents"] == n_raw
    removed = removed_records(curated.out)
    assert len(removed) == stats["removed_documents"]
    assert all(r["removed"]["reason"] and r["removed"]["step"] for r in removed)
    steps = [s["step"] for s in stats["steps"]]
    assert steps[-3:] == ["dedup", "pii", "length"]
    for step in stats["steps"]:
        assert step["in"] == step["kept"] + step["dropped_total"]
    assert (curated.out / "report.md").read_text().startswith("# Curation report")
    assert json.loads((curated.out / "manifest.json").read_text())["stage"] == "curate"
    assert not (curated.out / "work").exists()


def raw_ids(path: Path) -> list[str]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(line)["id"] for line in handle]


def accounted(out: Path) -> tuple[list[str], list[str]]:
    """(input ids of the kept documents, ids of the removed records), read from the published
    output and derived here: a kept record `d#k` with `parent_id` d and `chunk` k is chunk k of
    input document d, whose chunks must be exactly 0..n-1; augmented copies (`d~augK`) are not input."""
    records = [d for p in sorted((out / "shards").glob("*.jsonl.gz")) for d in read_shard(p)]
    assert len({d["id"] for d in records}) == len(records), "a kept record is written twice"
    chunks: dict[str, list[int]] = {}
    for d in records:
        meta = d["metadata"]
        if d["id"].startswith(f"{meta.get('augmented_from')}~aug"):
            continue
        if d["id"] == f"{meta.get('parent_id')}#{meta.get('chunk')}":
            chunks.setdefault(meta["parent_id"], []).append(meta["chunk"])
        else:
            chunks.setdefault(d["id"], []).append(None)
    for doc_id, numbers in chunks.items():
        assert numbers == [None] or sorted(numbers) == list(range(len(numbers))), (doc_id, numbers)
    return list(chunks), [r["id"] for r in removed_records(out)]


def assert_each_input_id_once(input_ids: list[str], out: Path) -> None:
    """Kept and removed ids together are the input ids, with no overlap and nothing twice
    (counts alone balance when one document is lost and another written twice)."""
    kept, removed = accounted(out)
    assert len(set(input_ids)) == len(input_ids)
    assert len(set(removed)) == len(removed), "a removed document is recorded twice"
    assert not set(kept) & set(removed), "documents both kept and removed"
    assert set(kept) | set(removed) == set(input_ids)
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["kept_documents"], stats["removed_documents"]) == (len(kept), len(removed))


def test_kept_and_removed_ids_are_the_input_ids_once_each(curated, corpus):
    assert_each_input_id_once(raw_ids(corpus), curated.out)
    kept, removed = accounted(curated.out)
    assert len(kept) > 100 and len(removed) > 50
    assert any("parent_id" in d["metadata"] for p in curated.shards.glob("*") for d in read_shard(p)), \
        "no document was split: the chunk accounting went untested"


def test_source_fields_named_like_step_metadata_do_not_confuse_the_accounting(corpus, tmp_path):
    """Records carrying their own `parent_id`, `chunk` or `augmented_from` (a comment thread, a
    pre-chunked corpus) land with them in metadata; they are still input documents of their own."""
    source = tmp_path / "threads.jsonl.gz"
    with gzip.open(corpus, "rt") as handle:
        records = [json.loads(line) for _, line in zip(range(150), handle, strict=False)]
    with gzip.open(source, "wt") as handle:
        for i, record in enumerate(records):
            fields = {"parent_id": f"thread-{i % 3}", "chunk": i % 2, "augmented_from": "doc-000000"}
            handle.write(json.dumps({**record, **fields}) + "\n")
    result = curate(config([source], tmp_path / "out", workers=1), say=lambda _: None)
    assert result.n_kept > 50
    assert_each_input_id_once([r["id"] for r in records], result.out)


def test_scores_against_planted_truth(curated):
    """The scorer the built-in corpus passes lands in stats.json and the report; curation itself
    never reads the truth (pyproject's import contract keeps lmforge.data.curate off synthetic)."""
    scores = curated.scores
    assert scores["exact_dedup"]["recall"] == 1.0 and scores["exact_dedup"]["precision"] == 1.0
    assert scores["near_dedup"]["recall"] >= 0.8 and scores["near_dedup"]["precision"] >= 0.9
    assert all(r >= 0.98 for r in scores["pii"]["recall"].values()), scores["pii"]
    assert scores["language_accuracy"] >= 0.95
    assert json.loads((curated.out / "stats.json").read_text())["scores"] == scores
    assert "## Against the planted ground truth" in (curated.out / "report.md").read_text()


def test_without_a_scorer_there_are_no_scores(corpus, tmp_path):
    docs = tmp_path / "docs.jsonl"
    with gzip.open(corpus, "rt") as handle:
        docs.write_text("".join(line for _, line in zip(range(40), handle, strict=False)))
    result = curate(config([docs], tmp_path / "out", workers=1), say=lambda _: None)
    assert result.scores == {} and json.loads((result.out / "stats.json").read_text())["scores"] == {}
    assert "planted" not in (result.out / "report.md").read_text()


def test_missing_source_stops_before_any_work(corpus, tmp_path):
    """A source that is not there is a mistake in the config, not a malformed record to count."""
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(DataError, match=f"^{re.escape(str(missing))}: no such file or folder"):
        curate(config([corpus, missing], tmp_path / "out"), say=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_kept_text_is_anonymised_and_chunked(curated):
    docs = [d for p in sorted(curated.shards.glob("*.jsonl.gz")) for d in read_shard(p)]
    assert docs and all(d["metadata"].get("lang") for d in docs)
    assert any("<EMAIL>" in d["text"] for d in docs)
    assert all(len(d["text"].split()) <= 512 for d in docs if d["metadata"]["lang"] != "zh")


def test_malformed_and_broken_inputs_are_counted_not_fatal(shared_data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "A fine first line of text that says something."}\n{"text": oops\n[1, 2]\n')
    web = shared_data / "web"
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes((web / "warc_dolma" / "sample-0000.warc.gz").read_bytes()[:100_000])
    sources = [bad, cut, web / "warcio_fixtures", web / "jsonl_dolma", web / "wet_ccnet_fixture"]
    result = curate(config(sources, tmp_path / "out", workers=1), say=lambda _: None)
    malformed = [r for r in removed_records(result.out) if r["removed"]["reason"] == "malformed"]
    assert {r["removed"]["location"] for r in malformed if r["source"] == str(bad)} == {"line 2", "line 3"}
    assert [r["removed"]["location"].split()[0] for r in malformed if r["source"] == str(cut)] == ["offset"]
    assert result.n_input == result.n_kept + sum(result.removed.values())
    # dolma's provided/deduper files hold the same documents: no text may survive twice
    texts = [d["text"] for p in sorted(result.shards.glob("*.jsonl.gz")) for d in read_shard(p)]
    assert result.removed["exact_duplicate"] >= 1 and len(set(texts)) == len(texts)
    kept, removed = accounted(result.out)
    assert len(set(kept) | set(removed)) == len(kept) + len(removed) == result.n_input


def test_wrong_config_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="steps.dedup.bandz"):
        load(CurateConfig, overrides=[f"sources=['{tmp_path}']", f"out='{tmp_path / 'o'}'",
                                      "steps.dedup.bandz=3"])
    assert not (tmp_path / "o").exists()


def comparable(out: Path) -> tuple[list, dict]:
    """Kept documents and stats, without timings and without scores (`lmforge curate` has no scorer)."""
    docs = [d for p in sorted((out / "shards").glob("*.jsonl.gz")) for d in read_shard(p)]
    stats = json.loads((out / "stats.json").read_text())
    for step in stats["steps"]:
        step.pop("seconds")
    stats.pop("scores")
    return docs, stats


def test_killed_run_resumes_to_the_same_output(corpus, curated, tmp_path):
    out = tmp_path / "resumed"
    cfg_file = tmp_path / "curate.yaml"
    cfg_file.write_text(yaml.safe_dump(config([corpus], out, workers=2).model_dump(mode="json")))
    command = [sys.executable, "-m", "lmforge", "curate", str(cfg_file)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    while not list((out / "work" / "filtered").glob("*.done")) and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the workers too
    process.wait()
    assert not (out / "manifest.json").exists(), "the kill came too late to test resuming"
    finished = run_bounded(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert comparable(out) == comparable(curated.out)


def test_augmented_copies_are_added_but_not_counted_as_input(corpus, tmp_path):
    steps = {"augment": {"enabled": True, "eda_ops": ["random_swap", "random_deletion"], "n_aug": 1}}
    result = curate(config([corpus], tmp_path / "aug", workers=1, steps=steps), say=lambda _: None)
    stats = json.loads((result.out / "stats.json").read_text())
    assert stats["augmented_documents"] > 0
    assert stats["input_documents"] == stats["kept_documents"] + stats["removed_documents"]
    copies = [d for p in sorted(result.shards.glob("*.jsonl.gz")) for d in read_shard(p)
              if "augmented_from" in d["metadata"]]
    assert len(copies) == stats["augmented_documents"] and all("~aug" in d["id"] for d in copies)
    assert_each_input_id_once(raw_ids(corpus), result.out)


def test_parquet_output_holds_the_same_documents(corpus, curated, tmp_path):
    from lmforge.data import read_documents

    result = curate(config([corpus], tmp_path / "pq", workers=1, output_format="parquet"), say=lambda _: None,
                    scorer=truth_scorer([corpus]))
    assert sorted(p.suffix for p in result.shards.iterdir()) == [".parquet"] * 4
    assert result.scores == curated.scores
    expected = [d for p in sorted(curated.shards.glob("*.jsonl.gz")) for d in read_shard(p)]
    got = list(read_documents([result.shards]))
    assert [(d["id"], d["text"]) for d in got] == [(d["id"], d["text"]) for d in expected]
