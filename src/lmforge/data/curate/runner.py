"""`lmforge curate`: raw sources -> a cleaned, deduplicated, anonymised dataset artifact.

Four stages, each resumable, joined by files under `OUT/work/`:
  0. ingest   read every source once into input shards of `shard_docs` documents;
              malformed records are counted as removed (`malformed`, with file and line)
  1. filter   per shard, in parallel tasks: normalise -> language -> quality, then the
              exact (MD5) and MinHash keys of every survivor
  2. dedup    one global pass over all keys: which documents are duplicates, which copy stays
              (the first in input order, so reruns and worker counts never change the choice)
  3. finish   per shard, in parallel tasks: drop duplicates -> PII -> length, write kept shards
The tasks run in worker processes on this machine (`executor: local`) or as Ray tasks across a
cluster (`executor: ray`), where the dedup pass is a shuffle by LSH band (see `executors`); both
give the same output.
PII is anonymised after deduplication (as FineWeb does): placeholders would otherwise make
different documents look alike. The output folder holds `shards/` (kept), `removed/` (every
removed document with its step and reason), `stats.json`, `report.md` and the manifest.
A source that does not exist stops the run before any work; a bad record inside an existing
source is counted as removed, and the run goes on.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from tqdm import tqdm

from lmforge.artifacts import MANIFEST, ArtifactError, atomic_write_json, atomic_write_text, write_manifest
from lmforge.config import Config, to_dict
from lmforge.data.curate.dedup import stage as dedup_stage
from lmforge.data.curate.executors import RunTasks, executor
from lmforge.data.curate.report import Scorer, Scores, render_report
from lmforge.data.curate.shards import (
    is_done,
    mark_done,
    read_shard,
    removed_record,
    run_steps,
    write_parquet_shard,
    write_shard,
)
from lmforge.data.curate.stats import AccountingError, StepStats, check_accounting, merge_all
from lmforge.data.curate.steps import StepSettings, filtering_steps, finishing_steps
from lmforge.data.documents import DataError
from lmforge.data.sources import Malformed, iter_sources, missing_sources


class CurationSettings(Config):
    """How a curation runs, whatever it reads and writes (`lmforge run` nests these)."""

    text_field: str = "text"
    """Field holding the text in JSONL/Parquet records."""
    executor: Literal["local", "ray"] = "local"
    """Where per-shard tasks run: worker processes here, or Ray tasks on a cluster for more than
    one machine (`pip install 'lmforge[ray]'`, and `out` on storage every node sees)."""
    ray_address: str | None = None
    """Ray cluster to join ("auto", "ray://head:10001"), or "local" to start a Ray instance of
    this run's own. None is Ray's default: the cluster the RAY_ADDRESS environment variable
    names (as `ray job submit` sets it), else one started with `ray start` on this machine,
    else a new local instance."""
    workers: int = Field(2, ge=1)
    """Worker processes for the per-shard stages with the local executor (1: all in this process)."""
    shard_docs: int = Field(1000, ge=1)
    """Documents per shard: the unit of parallel work and of resume."""
    steps: StepSettings = StepSettings()
    """Settings of every curation step."""
    output_format: Literal["jsonl.gz", "parquet"] = "jsonl.gz"
    """Format of the kept shards; removed documents are always JSONL.gz."""


class CurateConfig(CurationSettings):
    name: str = "curated"
    """Dataset name, recorded in the manifest."""
    sources: list[Path]
    """Input files or folders: JSONL (.gz/.zst), Parquet, .txt, WARC/WET, or hf:<dataset>."""
    out: Path = Path("datasets/curated")
    """Output dataset folder."""


@dataclass
class CurateResult:
    out: Path
    n_input: int
    n_kept: int
    removed: Counter
    scores: dict[str, Any]
    """The scorer's figures ({} without one), as stats.json holds them."""

    @property
    def shards(self) -> Path:
        return self.out / "shards"


def curate(cfg: CurateConfig, say: Callable[[str], None] = tqdm.write,
           scorer: Scorer | None = None) -> CurateResult:
    """Run (or resume) all stages; a finished output folder (with manifest) is left as it is.

    `scorer`, if given, scores the finished dataset against what the caller knows of its input
    (lmforge.data.synthetic does for the built-in corpus); its figures land in stats.json and
    the report, before the manifest seals the folder.
    """
    out, work = cfg.out, cfg.out / "work"
    if (out / MANIFEST).exists():
        raise ArtifactError(f"{out}: already curated (remove it to curate again)")
    if missing := missing_sources(cfg.sources):
        raise DataError(f"{', '.join(missing)}: no such file or folder (sources of curate)")
    settings = to_dict(cfg)
    with executor(cfg.executor, cfg.workers, cfg.ray_address) as (run_tasks, decide):
        say(dedup_stage.describe(cfg.steps.dedup))
        input_shards, n_input = _ingest(cfg, work / "input")
        _map_shards(run_tasks, filter_shard, input_shards, work / "filtered", settings, "filter")
        decide(sorted((work / "filtered").glob("*.keys.npz")), work / "dedup.json")
        filtered = [work / "filtered" / p.name for p in input_shards]
        _map_shards(run_tasks, finish_shard, filtered, work / "finished", settings, "finish")
    return _finalise(cfg, input_shards, n_input, scorer)


def _ingest(cfg: CurateConfig, folder: Path) -> tuple[list[Path], int]:
    """Stage 0: sources -> input shards; idempotent through its `DONE` marker."""
    marker = folder / "DONE"
    if not is_done(marker):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        shards, malformed, n_input = [], [], 0
        for k, batch in enumerate(_batches(_unique_ids(iter_sources(cfg.sources, cfg.text_field), malformed),
                                           cfg.shard_docs)):
            shards.append(folder / f"shard_{k:05d}.jsonl.gz")
            n_input += write_shard(shards[-1], batch)
        write_shard(folder / "malformed.jsonl.gz", malformed)
        mark_done(marker, {"shards": [p.name for p in shards], "documents": n_input + len(malformed)})
    summary = _read_json(marker)
    return [folder / name for name in summary["shards"]], summary["documents"]


def _unique_ids(items: Iterator[dict | Malformed], malformed: list[dict]) -> Iterator[dict]:
    """Documents with ids made unique; malformed records diverted to `malformed` as removed."""
    seen: set[str] = set()
    for item in items:
        if isinstance(item, Malformed):
            stub = {"id": f"{item.source}:{item.location}", "text": "", "source": item.source, "metadata": {}}
            malformed.append(removed_record(stub, "read", "malformed", location=item.location,
                                            error=item.error))
            continue
        doc_id, n = item["id"], 1
        while doc_id in seen:
            doc_id, n = f"{item['id']}~{n}", n + 1
        seen.add(doc_id)
        yield item if doc_id == item["id"] else {**item, "id": doc_id}


def _batches(docs: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _map_shards(run_tasks: RunTasks, task: Callable, shards: list[Path], out: Path, settings: dict,
                label: str) -> None:
    """Run `task(settings, shard, out)` on every shard without a done marker, in parallel."""
    out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in shards if not is_done(out / _marker_name(s))]
    with tqdm(total=len(shards), initial=len(shards) - len(todo), desc=label, unit="shard") as bar:
        for _ in run_tasks(task, [(settings, shard, out) for shard in todo]):
            bar.update(1)


def _stem(shard: Path) -> str:
    return shard.name.removesuffix(".jsonl.gz")


def _marker_name(shard: Path) -> str:
    return _stem(shard) + ".done"


def filter_shard(settings: dict, shard: Path, out: Path) -> None:
    """Stage 1 on one shard (a task, run by either executor): filtering steps, then dedup keys."""
    cfg = CurateConfig.model_validate(settings)
    kept, removed, stats = run_steps(read_shard(shard), filtering_steps(cfg.steps))
    dedup_stage.write_keys(out / f"{_stem(shard)}.keys.npz", kept, cfg.steps.dedup)
    _write_outputs(out, shard, kept, removed, stats)


def finish_shard(settings: dict, shard: Path, out: Path) -> None:
    """Stage 3 on one shard (a task, run by either executor): drop duplicates, anonymise, split."""
    cfg = CurateConfig.model_validate(settings)
    decisions = dedup_stage.load_decisions(shard.parent.parent / "dedup.json")
    kept, removed, stats = run_steps(read_shard(shard), finishing_steps(cfg.steps, decisions))
    _write_outputs(out, shard, kept, removed, stats)


def _write_outputs(out: Path, shard: Path, kept: list[dict], removed: list[dict],
                   stats: list[StepStats]) -> None:
    """A stage's files for one shard; the done marker goes last, so a marked shard is complete."""
    write_shard(out / shard.name, kept)
    write_shard(out / f"{_stem(shard)}.removed.jsonl.gz", removed)
    mark_done(out / _marker_name(shard), {"kept": len(kept), "stats": [s.to_dict() for s in stats]})


def _finalise(cfg: CurateConfig, input_shards: list[Path], n_input: int,
              scorer: Scorer | None) -> CurateResult:
    """Move outputs into place, check the accounting, score, write stats, report and manifest."""
    out, work = cfg.out, cfg.out / "work"
    finished = _publish(cfg, input_shards)
    kept_ids, removed, augmented = _account(out, input_shards, finished, n_input)
    scores = scorer(out) if scorer else Scores({}, "")
    summary = {"input_documents": n_input, "kept_documents": len(kept_ids),
               "removed_documents": sum(removed.values()),
               "augmented_documents": augmented, "removed_by_reason": dict(sorted(removed.items())),
               "steps": [s.to_dict() for s in _stage_stats(work, input_shards)], "scores": scores.figures}
    atomic_write_json(out / "stats.json", summary)
    atomic_write_text(out / "report.md", render_report(cfg.name, summary, scores.section))
    shutil.rmtree(work)  # before the manifest, which lists the folder's files
    write_manifest(out, "curate", to_dict(cfg), parents=cfg.sources)
    return CurateResult(out, n_input, len(kept_ids), removed, scores.figures)


def _publish(cfg: CurateConfig, input_shards: list[Path]) -> list[Path]:
    """Kept shards to `shards/` (in the output format), every removed record to `removed/`;
    returns the finished shards, still in JSONL.gz, in input order."""
    out, work = cfg.out, cfg.out / "work"
    for sub in ("shards", "removed"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    removed_files = [work / "input" / "malformed.jsonl.gz"]
    for stage in ("filtered", "finished"):
        removed_files += sorted((work / stage).glob("*.removed.jsonl.gz"))
    for i, path in enumerate(removed_files):
        shutil.copyfile(path, out / "removed" / f"part_{i:05d}.jsonl.gz")
    finished = [work / "finished" / shard.name for shard in input_shards]
    for path in finished:
        _publish_shard(path, out / "shards", cfg.output_format)
    return finished


def _account(out: Path, input_shards: list[Path], finished: list[Path],
             n_input: int) -> tuple[list[str], Counter, int]:
    """(input ids of the kept documents, removed documents by reason, augmented copies), after
    checking that kept and removed ids together are the input ids, each exactly once."""
    removed_ids, removed = [], Counter()
    for path in sorted((out / "removed").glob("*.jsonl.gz")):
        for record in read_shard(path):
            removed_ids.append(record["id"])
            removed[record["removed"]["reason"]] += 1
    kept_ids, augmented = [], 0
    for doc in (doc for path in finished for doc in read_shard(path)):
        if _is_augmented_copy(doc):
            augmented += 1
        elif (doc_id := _input_id(doc)) is not None:
            kept_ids.append(doc_id)
    input_ids = [doc["id"] for path in [*input_shards, out / "work" / "input" / "malformed.jsonl.gz"]
                 for doc in read_shard(path)]
    if len(input_ids) != n_input:
        raise AccountingError(f"ingest counted {n_input} documents but wrote {len(input_ids)}")
    check_accounting(input_ids, kept_ids, removed_ids)
    return kept_ids, removed, augmented


def _is_augmented_copy(doc: dict) -> bool:
    """A copy the augment step added (`d~augK`, `augmented_from: d`): not an input document."""
    origin = doc["metadata"].get("augmented_from")
    return isinstance(origin, str) and doc["id"].startswith(f"{origin}~aug")


def _input_id(doc: dict) -> str | None:
    """The input document a kept record stands for: itself, or for a split document's chunks
    (`d#K`, `parent_id: d`, `chunk: K`) the parent, once, at chunk 0 (None for the others).

    The id the length step derived decides, not the metadata fields alone: a source record's
    own fields land in metadata too, and may well be called `parent_id` or `chunk`.
    """
    meta = doc["metadata"]
    parent = meta.get("parent_id")
    if isinstance(parent, str) and doc["id"] == f"{parent}#{meta.get('chunk')}":
        return parent if meta["chunk"] == 0 else None
    return doc["id"]


def _publish_shard(path: Path, folder: Path, output_format: str) -> None:
    if output_format == "jsonl.gz":
        shutil.copyfile(path, folder / path.name)
    else:
        write_parquet_shard(folder / path.name.replace(".jsonl.gz", ".parquet"), read_shard(path))


def _stage_stats(work: Path, input_shards: list[Path]) -> list[StepStats]:
    parts = []
    for shard in input_shards:
        marker = _marker_name(shard)
        parts.append(_read_json(work / "filtered" / marker)["stats"]
                     + _read_json(work / "finished" / marker)["stats"])
    return merge_all(parts)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
