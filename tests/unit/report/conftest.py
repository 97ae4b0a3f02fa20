"""A fake run folder: every artifact the report reads, with tiny made-up numbers, written directly.

The A/B analysis and the compression report are written by their real writers (`write_analysis`,
`write_report`), so the report is held to the files those stages really produce; the rest follow
the formats their stages document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lmforge.artifacts import write_manifest

STAGES = ("corpus", "curate", "tokenizer", "pretrain", "tasks", "finetune", "multitask", "quantize",
          "compress-report", "export", "serve", "abtest")
REMOVED = {"near_duplicate": 20, "lang_below_threshold": 12, "gopher_short_doc": 5}
LATENCIES = [float(x) for x in np.random.default_rng(0).lognormal(3.0, 0.4, 200)]


def _json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _artifact(run: Path, relative: str, stage: str, parents: Iterable[str] = ()) -> str:
    folder = run / relative
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, stage, parents=[run / p for p in parents])
    return relative


def corpus(run: Path) -> dict[str, Any]:
    return {"artifacts": {"dataset": _artifact(run, "datasets/default", "corpus")}, "figure": "120 documents"}


def curate(run: Path) -> dict[str, Any]:
    _json(run / "datasets/curated/stats.json", {
        "input_documents": 120, "kept_documents": 83, "removed_documents": 37, "augmented_documents": 0,
        "removed_by_reason": REMOVED})
    return {"artifacts": {"dataset": _artifact(run, "datasets/curated", "curate", ["datasets/default"])},
            "figure": "kept 83 of 120"}


def tokenizer(run: Path) -> dict[str, Any]:
    tok = _artifact(run, "tokenizers/default", "tokenizer", ["datasets/curated"])
    tokens = _artifact(run, "datasets/curated/tokens", "pack", ["datasets/curated", tok])
    return {"artifacts": {"tokenizer": tok, "tokens": tokens}, "figure": "vocab 1000"}


def pretrain(run: Path) -> dict[str, Any]:
    lines = [{"step": 0, "val_loss": 6.9, "val_ppl": 992.3}]
    lines += [{"step": s, "loss": 7.0 - 0.1 * s, "lr": 1e-3 * min(1, s / 10), "grad_norm": 1.0}
              for s in range(1, 41)]
    lines += [{"step": 20, "val_loss": 5.2, "val_ppl": 181.3},
              {"step": 40, "val_loss": 3.4, "val_ppl": 29.96}]
    checkpoints = run / "checkpoints/fake"
    checkpoints.mkdir(parents=True)
    (checkpoints / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    _artifact(run, "checkpoints/fake/step_40", "pretrain")  # never a row of the lineage
    model = _artifact(run, "models/fake", "pretrain", ["datasets/curated/tokens", "tokenizers/default"])
    return {"artifacts": {"model": model}, "figure": "validation perplexity 992.3 -> 29.96",
            "figures": {"log": "checkpoints/fake/metrics.jsonl"}}


def tasks(run: Path) -> dict[str, Any]:
    for name in ("classify", "ner"):
        (run / "tasks" / name).mkdir(parents=True)
    return {"artifacts": {"classify": "tasks/classify", "ner": "tasks/ner"}, "figure": "2 tasks"}


def finetune(run: Path) -> dict[str, Any]:
    _json(run / "models/fake-classify/metrics.json", {
        "task": "classify", "steps": 40, "best_step": 30, "dev": {"accuracy": 0.8125, "macro_f1": 0.7911},
        "test": {"accuracy": 0.7969, "macro_f1": 0.7702}})
    _json(run / "models/fake-ner/metrics.json", {
        "task": "ner", "steps": 60, "best_step": 60, "dev": {"f1": 0.6631}, "test": {"f1": 0.6412}})
    comparison = [
        {"task": "classify", "metric": "accuracy", "examples": 64, "pretrained": 0.81, "scratch": 0.70},
        {"task": "ner", "metric": "f1", "examples": 64, "pretrained": 0.64, "scratch": 0.41}]
    return {"artifacts": {"classify": _artifact(run, "models/fake-classify", "finetune", ["models/fake"]),
                          "ner": _artifact(run, "models/fake-ner", "finetune", ["models/fake"])},
            "figure": "classify accuracy 0.7969", "figures": {"comparison": comparison}}


def multitask(run: Path) -> dict[str, Any]:
    _json(run / "models/fake-multitask/metrics.json", {
        "dev": {"classify": {"accuracy": 0.7734}, "ner": {"f1": 0.5918}},
        "majority_baseline": {"classify": 0.3438}, "weights": {"classify": 1.2345, "ner": 0.7655}})
    return {"artifacts": {"model": _artifact(run, "models/fake-multitask", "finetune", ["models/fake"])},
            "figure": "GradNorm weights 1.23 / 0.77"}


def quantize(run: Path) -> dict[str, Any]:
    model = _artifact(run, "models/fake-classify-int8-dynamic", "quantize", ["models/fake-classify"])
    return {"artifacts": {"model": model}, "figure": "3.1x smaller"}


def compress_report(run: Path) -> dict[str, Any]:
    from lmforge.compress.report import Row, write_report

    folder = run / "models/fake-classify-compress-report"
    write_report(folder, [
        Row("fake-classify", run / "models/fake-classify", 4_000_000, {1: 4.0, 32: 40.0}, 90_000_000,
            {"accuracy": 0.7969}, 12800.0),
        Row("fake-classify-int8-dynamic", run / "models/fake-classify-int8-dynamic", 1_300_000,
            {1: 2.5, 32: 22.0}, 60_000_000, {"accuracy": 0.7891}, 23272.7)])
    return {"artifacts": {"report": _artifact(run, "models/fake-classify-compress-report", "compress-report",
                                              ["models/fake-classify", "models/fake-classify-int8-dynamic"])},
            "figure": "int8 1.6x faster"}


def export(run: Path) -> dict[str, Any]:
    figures = {"shapes_checked": [[[1, 8], [1, 8]]], "max_abs_diff": {"logits": 1.5e-06},
               "argmax_agreement": 1.0}
    _json(run / "exports/fake-classify/onnx/verification.json", {**figures, "size_bytes": 4_100_000})
    _json(run / "exports/fake-classify/triton/verification.json", {
        "models": {"fake_classify": {**figures, "size_bytes": 4_100_000},
                   "fake_classify_torch": {**figures, "max_abs_diff": {"logits": 0.0},
                                           "size_bytes": 4_300_000}},
        "max_batch_size": 8})
    return {"artifacts": {
        "onnx": _artifact(run, "exports/fake-classify/onnx", "export", ["models/fake-classify"]),
        "triton": _artifact(run, "exports/fake-classify/triton", "export", ["models/fake-classify"])},
        "figure": "max abs diff 1.5e-06"}


def serve(run: Path) -> dict[str, Any]:
    _json(run / "serving/metrics.json", {
        "model": "classify", "requests": 200, "errors": 0, "seconds": 6.15, "concurrency": 8,
        "throughput_rps": 32.52, "latency_ms": {"mean": 21.7, "p50": 20.1, "p90": 33.4, "p99": 47.25},
        "latencies_ms": LATENCIES, "accuracy": 0.785, "feedback": {"positive": 150, "negative": 41}})
    return {"artifacts": {"serving": "serving"}, "figure": "p99 47.25 ms"}


def abtest(run: Path) -> dict[str, Any]:
    from lmforge.improve.abtest import MetricSpec, VariantData, analyze, write_analysis

    rng = np.random.default_rng(1)
    variants = [VariantData(name, 0.5, {"accuracy": rng.binomial(1, p, 400).astype(float),
                                        "latency_ms": rng.normal(20, 3, 400)})
                for name, p in (("control", 0.70), ("candidate", 0.85))]
    analysis = analyze(variants, [MetricSpec("accuracy", primary=True), MetricSpec("latency_ms", False)])
    write_analysis(run / "abtest", "fake-ab", analysis)
    _json(run / "abtest/promotion.json",
          {"promoted": True, "variant": "candidate", "serves_version": "ab12cd34"})
    return {"artifacts": {"abtest": "abtest"}, "figure": f"decision: {analysis.decision}"}


WRITERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "corpus": corpus, "curate": curate, "tokenizer": tokenizer, "pretrain": pretrain, "tasks": tasks,
    "finetune": finetune, "multitask": multitask, "quantize": quantize, "compress-report": compress_report,
    "export": export, "serve": serve, "abtest": abtest}


def write_run(run: Path, stages: Iterable[str] = STAGES) -> Path:
    """The stages' artifacts and the index lines they append, in order, each taking 1.5 seconds."""
    index = run / "logs/stages.jsonl"
    index.parent.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        record = {"stage": stage, "seconds": 1.5, "figures": {}, **WRITERS[stage](run)}
        with index.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return run


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    """make_run(stages=STAGES, name="fake") -> a run folder with those stages recorded."""
    return lambda stages=STAGES, name="fake": write_run(tmp_path / name, stages)
