"""`lmforge compress-report BASE VARIANT...`: every variant against the float model, one table.

Size on disk, peak memory, latency at batch 1 and 32, throughput and quality, side by side, as
Markdown and as an HTML page with a Pareto plot (latency against quality, marker area = size).

How each figure is taken, so that ratios between variants mean something:
- latency: the median of `rounds` interleaved rounds (every variant once per round, so a burst
  of foreign load hits all of them alike), after one warm-up pass each, random tokens at the
  head's trained length (or the segment length);
- peak memory: in a fresh process per variant, the resident high-water mark of loading the
  variant and running one batch-32 pass, above the process's resident size before loading;
- quality: the head's metrics on `--data` (accuracy / macro-F1, entity F1, recall@k), or, for
  a language model, perplexity on the validation split of the tokens its lineage was trained on.
"""

from __future__ import annotations

import base64
import io
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from lmforge.artifacts import ArtifactError, atomic_write_json, atomic_write_text, read_manifest
from lmforge.config import Config
from lmforge.export.edge_batch import model_forward, status_bytes
from lmforge.export.verify import ort_runner
from lmforge.model.bundle import ModelBundle, load_bundle
from lmforge.train.finetune import score_file
from lmforge.train.pretrain import perplexity

BATCHES = (1, 32)


class ReportConfig(Config):
    """`lmforge compress-report`: which folders, on what data, how many timing rounds."""

    models: list[Path] = Field(min_length=1)
    """The float model first, then its variants (model folders)."""
    data: Path | None = None
    """Labelled file to score task heads on (default: the test file the base was fine-tuned with)."""
    rounds: int = Field(7, gt=0)
    """Interleaved timing rounds; the median is reported."""
    eval_segments: int = Field(20, gt=0)
    """Language models: validation segments for perplexity."""
    out: Path | None = None
    """Report folder (default: `<base>-compress-report` beside the base)."""

    @property
    def output(self) -> Path:
        base = self.models[0]
        return self.out or base.parent / f"{base.name}-compress-report"


@dataclass
class Variant:
    """One way of running the model: how to time it, score it and measure its memory."""

    name: str
    folder: Path
    bundle: ModelBundle
    """The model folder (an export's parent): tokenizer, heads, how each head was trained."""
    size_bytes: int
    forward: Callable[[int, int], object]
    """forward(batch, seq_len) on random tokens."""
    task_model: Callable[..., Any] | None
    """Called like MultiTaskModel: (head, ids, mask) -> (loss, outputs); None: the bundle's own."""
    memory: tuple[Callable[..., object], ...]
    """(top-level function, *args) that loads the variant and runs one batch of 32."""


@dataclass
class Row:
    name: str
    folder: Path
    size_bytes: int
    latency_ms: dict[int, float] = field(default_factory=dict)
    peak_memory_bytes: int = 0
    quality: dict[str, float] = field(default_factory=dict)
    tokens_per_s: float = 0.0


def compress_report(cfg: ReportConfig) -> list[Row]:
    """Measure every folder of `cfg.models` and write report.md, report.html and report.json."""
    base = load_bundle(cfg.models[0])
    head = base.task_head()
    seq_len = base.usage(head).get("max_len", base.config.seq_len) if head else base.config.seq_len
    variants = [variant(folder, seq_len) for folder in cfg.models]
    data = cfg.data or _recorded_test_file(base)
    rows = measure(variants, seq_len, cfg.rounds, head, data, cfg.eval_segments)
    write_report(cfg.output, rows)
    return rows


def measure(variants: list[Variant], seq_len: int, rounds: int, head: str | None, data: Path | None,
            eval_segments: int, text_column: str | None = None) -> list[Row]:
    """`text_column`: the data file's text column when it is not the one the head was trained on."""
    rows = [Row(v.name, v.folder, v.size_bytes) for v in variants]
    for row, latency in zip(rows, interleaved_latency([v.forward for v in variants], seq_len, rounds),
                            strict=True):
        row.latency_ms = latency
        row.tokens_per_s = BATCHES[-1] * seq_len / (latency[BATCHES[-1]] / 1000)
    for row, v in zip(rows, variants, strict=True):
        row.peak_memory_bytes = peak_memory(*v.memory)
        row.quality = quality(v, head, data, eval_segments, text_column)
    return rows


def variant(folder: Path, seq_len: int) -> Variant:
    """A model folder, or an ONNX export folder (`lmforge export --format onnx|onnx-int8`)."""
    if (folder / "model.onnx").is_file():
        return onnx_variant(folder, seq_len)
    bundle = load_bundle(folder)
    weights = sum((folder / n).stat().st_size for n in ("model.safetensors", "heads.safetensors")
                  if (folder / n).exists())
    return Variant(folder.name, folder, bundle, weights,
                   model_forward(bundle.model, bundle.config.vocab_size, torch.device("cpu")), None,
                   (serve_one_batch, str(folder), seq_len))


def onnx_variant(folder: Path, seq_len: int) -> Variant:
    parents = read_manifest(folder).get("parents", [])
    if not parents:
        raise ArtifactError(f"{folder}: its manifest names no parent model folder")
    bundle = load_bundle(parents[0]["path"])
    graph = folder / "model.onnx"
    size = sum(p.stat().st_size for p in folder.glob("model.onnx*"))
    runner = ort_runner(graph)
    return Variant(f"{folder.parent.name}/{folder.name}", folder, bundle, size,
                   lambda batch, length: runner(_onnx_inputs(bundle, batch, length)), OrtTaskModel(runner),
                   (run_onnx_batch, str(graph), str(parents[0]["path"]), seq_len))


def _onnx_inputs(bundle: ModelBundle, batch: int, seq_len: int) -> list[np.ndarray]:
    """Random token ids and either an all-real attention mask (a head) or empty memory (an LM step)."""
    ids = np.random.default_rng(0).integers(0, bundle.config.vocab_size, (batch, seq_len), dtype=np.int64)
    if bundle.task_head() is not None:
        return [ids, np.ones_like(ids)]
    return [ids, np.zeros((batch, bundle.config.n_layers, 0, bundle.config.d_model), dtype=np.float32)]


class OrtTaskModel:
    """An exported head in ONNX Runtime, called like MultiTaskModel: (head, ids, mask) -> (None, outputs),
    so `lmforge evaluate`'s scoring runs it unchanged."""

    training = False

    def __init__(self, runner: Callable[[list[np.ndarray]], list[np.ndarray]]):
        self.runner = runner

    def __call__(self, head: str, ids: torch.Tensor, mask: torch.Tensor) -> tuple[None, torch.Tensor]:
        outputs = self.runner([ids.numpy().astype(np.int64), mask.numpy().astype(np.int64)])
        return None, torch.from_numpy(outputs[0])

    def eval(self) -> OrtTaskModel:
        return self

    def train(self, mode: bool = True) -> OrtTaskModel:
        return self

    def parameters(self) -> Iterator[torch.Tensor]:
        return iter(())


def _recorded_test_file(bundle: ModelBundle) -> Path | None:
    test = read_manifest(bundle.folder).get("config", {}).get("data", {}).get("test")
    return Path(test) if test else None


def interleaved_latency(forwards: list[Callable[[int, int], object]], seq_len: int,
                        rounds: int) -> list[dict[int, float]]:
    """Median milliseconds per forward pass, for each batch of BATCHES, over interleaved rounds."""
    times: list[dict[int, list[float]]] = [{b: [] for b in BATCHES} for _ in forwards]
    for forward in forwards:
        for batch in BATCHES:
            forward(batch, seq_len)  # warm-up
    for _ in range(rounds):
        for forward, record in zip(forwards, times, strict=True):
            for batch in BATCHES:
                start = time.perf_counter()
                forward(batch, seq_len)
                record[batch].append((time.perf_counter() - start) * 1000)
    return [{b: statistics.median(ms) for b, ms in record.items()} for record in times]


def peak_memory(load_and_run: Callable[..., object], *args: object) -> int:
    """Resident bytes a fresh process needs for `load_and_run(*args)` (a top-level function, so a
    spawned process can import it): its high-water mark above its size before the call."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measured, (load_and_run, *args))


def _measured(function: Callable[..., object], *args: object) -> int:
    before = status_bytes("VmRSS")
    function(*args)
    return status_bytes("VmHWM") - before


def run_onnx_batch(graph: str, parent: str, seq_len: int) -> None:
    """Load an ONNX graph into ONNX Runtime and run one batch of 32."""
    ort_runner(Path(graph))(_onnx_inputs(load_bundle(parent), BATCHES[-1], seq_len))


def serve_one_batch(folder: str, seq_len: int) -> None:
    """Load a model folder and run one batch-32 pass: what serving a variant costs in memory."""
    bundle = load_bundle(folder)
    model_forward(bundle.model, bundle.config.vocab_size, torch.device("cpu"))(BATCHES[-1], seq_len)


def quality(v: Variant, head: str | None, data: Path | None, eval_segments: int,
            text_column: str | None = None) -> dict[str, float]:
    """The head's metrics on `data`, or the language model's perplexity (PyTorch variants only)."""
    if head is not None:
        if data is None:
            raise ArtifactError(f"{v.bundle.folder}: no test file recorded for head {head!r}; "
                                "pass --data FILE")
        task = v.bundle.spec[head]["task"]
        return score_file(v.bundle, head, task, data, text_column, model=v.task_model)
    if v.task_model is not None:
        return {}  # an exported LM step: its logits are checked against PyTorch at export time
    return {"ppl": perplexity(v.bundle.model, _lineage_tokens(v.folder), eval_segments)["ppl"]}


def _lineage_tokens(folder: Path) -> Path:
    """The packed tokens the first ancestor that pretrained on them names in its manifest."""
    seen: set[Path] = set()
    while folder not in seen:
        seen.add(folder)
        manifest = read_manifest(folder)
        tokens = manifest.get("config", {}).get("data", {}).get("tokens")
        if tokens:
            return Path(tokens)
        parents = [Path(p["path"]) for p in manifest.get("parents", [])
                   if (Path(p["path"]) / "config.json").exists()]
        if not parents:
            break
        folder = parents[0]
    raise ArtifactError(f"{folder}: no ancestor records the tokens it was trained on, so perplexity "
                        "cannot be measured")


# --- writing ----------------------------------------------------------------------------------


def write_report(out: Path, rows: list[Row]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    metric = _headline_metric(rows[0])
    atomic_write_text(out / "report.md", markdown(rows, metric))
    atomic_write_text(out / "report.html", html(rows, metric))
    atomic_write_json(out / "report.json", [_as_json(row) for row in rows])


def _headline_metric(row: Row) -> str:
    for name in ("accuracy", "f1", "ppl"):
        if name in row.quality:
            return name
    return next(iter(row.quality))


def markdown(rows: list[Row], metric: str) -> str:
    base = rows[0]
    header = ("| variant | size MB | size vs base | peak memory MB | memory vs base | latency b=1 ms "
              f"| speed-up b=1 | latency b=32 ms | speed-up b=32 | tokens/s | {metric} | {metric} change |")
    lines = [header, "|" + "---|" * 12]
    for row in rows:
        memory_change = row.peak_memory_bytes / base.peak_memory_bytes - 1
        score = f"{row.quality[metric]:.4f} | {row.quality[metric] - base.quality[metric]:+.4f}" \
            if metric in row.quality else "- | -"
        lines.append(
            f"| {row.name} | {row.size_bytes / 1e6:.2f} | {base.size_bytes / row.size_bytes:.2f}x smaller "
            f"| {row.peak_memory_bytes / 1e6:.1f} | {memory_change:+.0%} "
            f"| {row.latency_ms[1]:.1f} | {base.latency_ms[1] / row.latency_ms[1]:.2f}x "
            f"| {row.latency_ms[32]:.1f} | {base.latency_ms[32] / row.latency_ms[32]:.2f}x "
            f"| {row.tokens_per_s:,.0f} | {score} |")
    return "\n".join(lines) + "\n"


def pareto_png(rows: list[Row], metric: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    biggest = max(row.size_bytes for row in rows)
    for row in (row for row in rows if metric in row.quality):
        area = 40 + 400 * row.size_bytes / biggest
        axes.scatter(row.latency_ms[1], row.quality[metric], s=area, alpha=0.6)
        axes.annotate(row.name, (row.latency_ms[1], row.quality[metric]), fontsize=8)
    axes.set_xlabel("latency at batch 1 (ms, median)")
    axes.set_ylabel(metric + (" (lower is better)" if metric == "ppl" else ""))
    axes.set_title("quality against latency (marker area = size on disk)")
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def html(rows: list[Row], metric: str) -> str:
    """A self-contained page: the table and the Pareto plot as an inline PNG."""
    table = markdown(rows, metric).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table if not line.startswith("|---")]
    head = "".join(f"<th>{c}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
    image = base64.b64encode(pareto_png(rows, metric)).decode()
    return ("<!doctype html><html><head><meta charset='utf-8'><title>compression report</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
            f"<h1>Compression report: {rows[0].name} and {len(rows) - 1} variants</h1>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<p><img alt='Pareto plot' src='data:image/png;base64,{image}'></p></body></html>\n")


def _as_json(row: Row) -> dict[str, Any]:
    return {"name": row.name, "folder": str(row.folder), "size_bytes": row.size_bytes,
            "latency_ms": {str(b): ms for b, ms in row.latency_ms.items()},
            "peak_memory_bytes": row.peak_memory_bytes, "tokens_per_s": row.tokens_per_s,
            "quality": row.quality}
