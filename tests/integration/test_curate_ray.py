"""Curation on Ray, on a local Ray instance: the same output as the local executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.data.curate import CurateConfig, curate
from lmforge.data.curate.shards import read_shard
from lmforge.data.synthetic import generate_corpus, truth_scorer

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def outputs(out: Path) -> dict[str, object]:
    """Everything a curation run leaves that does not depend on timing."""
    def records(folder: str) -> dict[str, list[dict]]:
        return {p.name: list(read_shard(p)) for p in sorted((out / folder).glob("*.jsonl.gz"))}

    stats = json.loads((out / "stats.json").read_text())
    for step in stats["steps"]:
        step.pop("seconds")
    return {"shards": records("shards"), "removed": records("removed"), "stats": stats}


def test_ray_executor_gives_the_local_output(tmp_path, monkeypatch):
    """On a Ray instance of its own: `ray_address: local` starts one whatever RAY_ADDRESS says. The
    variable is set here to something no cluster answers to, so a run that honoured it would fail
    at once instead of joining whatever cluster the environment names."""
    monkeypatch.setenv("RAY_ADDRESS", "not-a-cluster-the-tests-may-join")
    generate_corpus(tmp_path / "raw", seed=5, size_mb=0.4)
    sources = [tmp_path / "raw" / "documents.jsonl.gz"]
    runs = {executor: curate(CurateConfig(sources=sources, out=tmp_path / executor, shard_docs=100,
                                          executor=executor, ray_address="local"), say=lambda _: None,
                             scorer=truth_scorer(sources))
            for executor in ("local", "ray")}
    assert not ray.is_initialized(), "the runner stops the Ray instance it started"
    local, on_ray = runs["local"], runs["ray"]
    assert outputs(on_ray.out) == outputs(local.out)
    assert on_ray.removed["exact_duplicate"] and on_ray.removed["near_duplicate"]
    assert on_ray.n_input == on_ray.n_kept + sum(on_ray.removed.values())
    assert on_ray.scores == local.scores and on_ray.scores["near_dedup"]["recall"]
