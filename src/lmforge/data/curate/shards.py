"""Running per-document steps over one shard: the unit of parallel work and of resume.

A shard is a JSONL.gz file. Running steps over it writes, next to each other, the surviving
documents, the removed ones (each with the step and reason that removed it) and the stats;
a `.done` marker is written last, so a shard with a marker is complete and a rerun skips it.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from lmforge.artifacts import atomic_write_bytes, atomic_write_json
from lmforge.data.curate.base import Drop, Step
from lmforge.data.curate.stats import StepStats


def read_shard(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def write_shard(path: Path, docs: Iterable[dict]) -> int:
    """Write documents as JSONL.gz (mtime 0: same documents, same bytes); returns the count."""
    lines = [json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs]
    atomic_write_bytes(path, gzip.compress("".join(lines).encode("utf-8"), mtime=0))
    return len(lines)


def write_parquet_shard(path: Path, docs: Iterable[dict]) -> None:
    """Write documents as Parquet: id, text, source columns and metadata as a struct column."""
    import pyarrow
    import pyarrow.parquet

    tmp = path.with_name(f".{path.name}.tmp")
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(list(docs)), tmp)
    tmp.replace(path)


def removed_record(doc: dict, step: str, reason: str, **detail) -> dict:
    """A removed document as stored: the document as the removing step saw it, plus why."""
    return {**doc, "removed": {"step": step, "reason": reason, **detail}}


def run_steps(docs: Iterable[dict], steps: list[Step]) -> tuple[list[dict], list[dict], list[StepStats]]:
    """Pass documents through `steps` in order; return (kept, removed, per-step stats)."""
    stats = [StepStats(step.name) for step in steps]
    kept, removed = [], []
    for doc in docs:
        batch = [doc]
        for step, step_stats in zip(steps, stats, strict=True):
            batch = _apply(step, step_stats, batch, removed)
            if not batch:
                break
        kept.extend(batch)
    return kept, removed, stats


def _apply(step: Step, stats: StepStats, batch: list[dict], removed: list[dict]) -> list[dict]:
    passed: list[dict] = []
    started = time.perf_counter()
    for doc in batch:
        stats.seen += 1
        result = step.apply(doc, stats.counters)
        if isinstance(result, Drop):
            stats.dropped[result.reason] += 1
            removed.append(removed_record(doc, step.name, result.reason))
        else:
            stats.kept += 1
            passed.extend(result)
    stats.seconds += time.perf_counter() - started
    return passed


def is_done(marker: Path) -> bool:
    return marker.is_file()


def mark_done(marker: Path, summary: dict) -> None:
    atomic_write_json(marker, summary)
