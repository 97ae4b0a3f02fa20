"""Multi-task fine-tuning: one shared backbone, one head per task, task losses balanced by GradNorm.

Every step draws one batch per task and combines the task losses with learnable GradNorm weights
(Chen et al. 2018), which keep the tasks' gradient norms at the last shared layer in balance, or
with equal fixed weights. The step count is fixed (no early stopping: with several dev metrics
there is no single best step); each task's dev metric is scored once at the end. Batching,
tokenisation, heads, optimizer and scoring are the single-task fine-tuning ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from lmforge.data.tasks import infer_labels
from lmforge.model.folder import load_heads, load_model, read_heads, save_model_folder, tokenizer_file
from lmforge.model.gradnorm import FixedWeights, GradNorm
from lmforge.model.heads import MultiTaskModel, heads_spec, shared_layer
from lmforge.train.finetune import new_head, score, task_loss
from lmforge.train.finetune_config import Task
from lmforge.train.finetune_data import (
    Encoded,
    Example,
    encode_examples,
    hold_out,
    read_examples,
    shuffled_batches,
)
from lmforge.train.loop import TrainingDiverged, adamw, clip_gradients
from lmforge.train.schedule import warmup_cosine
from lmforge.train.task_metrics import majority_baseline

Balancer = Literal["gradnorm", "equal"]
WEIGHT_DECAY, GRAD_CLIP, WARMUP_FRACTION, MIN_LR_RATIO = 0.01, 1.0, 0.1, 0.1
"""Optimisation settings shared with single-task fine-tuning (FinetuneConfig's defaults)."""


@dataclass
class TaskSpec:
    """One task of a multi-task run: its kind, its data (examples or a file) and its head's name.

    Without `dev`, a seeded 10% of train is held out, as in single-task fine-tuning.
    """

    task: Task
    train: list[Example] | Path
    dev: list[Example] | Path | None = None
    head: str | None = None
    text_column: str | int = "text"
    label_column: str | int = "label"
    k: int = 1

    @property
    def name(self) -> str:
        return self.head or self.task


@dataclass
class MultitaskResult:
    dev: dict[str, dict[str, float]]
    """Dev metrics of each head at the end."""
    majority_baseline: dict[str, float]
    """Dev accuracy of always predicting train's most frequent label, for classify heads."""
    weights: dict[str, float]
    """Final task weights."""
    log: list[dict[str, Any]] = field(default_factory=list)
    """Every `log_every` steps: step, mean task losses since the last record, task weights."""
    model_dir: Path | None = None


@dataclass
class _TaskData:
    spec: TaskSpec
    labels: list[str]
    train: Encoded
    dev: Encoded
    dev_examples: list[Example]


def _examples(data: list[Example] | Path, spec: TaskSpec) -> list[Example]:
    return data if isinstance(data, list) else read_examples(Path(data), spec.task, spec.text_column,
                                                             spec.label_column)


def _prepare(spec: TaskSpec, tokenizer: Tokenizer, max_len: int, seed: int) -> _TaskData:
    """Read, split and tokenise one task's data; the label set is inferred from train."""
    train = _examples(spec.train, spec)
    if spec.dev is None:
        train, dev = hold_out(train, 0.1, seed)
    else:
        dev = _examples(spec.dev, spec)
    labels = infer_labels(train) if spec.task != "embed" else []
    return _TaskData(spec, labels, encode_examples(tokenizer, train, spec.task, labels, max_len),
                     encode_examples(tokenizer, dev, spec.task, labels, max_len), dev)


def _balancer(kind: Balancer, n_tasks: int, alpha: float) -> GradNorm | FixedWeights:
    if kind == "gradnorm":
        return GradNorm(n_tasks, alpha)
    if kind == "equal":
        return FixedWeights([1.0] * n_tasks)
    raise ValueError(f"unknown balancer {kind!r}; use 'gradnorm' or 'equal'")


def _train(model: MultiTaskModel, tasks: list[_TaskData], balancer: GradNorm | FixedWeights, steps: int,
           batch_size: int, lr: float, seed: int, log_every: int) -> list[dict[str, Any]]:
    """The joint loop: per step one batch per task, `update` the weights, then the weighted backward."""
    optimizer = adamw(model, lr, WEIGHT_DECAY)
    batches = [shuffled_batches(len(t.train.ids), batch_size, seed + i) for i, t in enumerate(tasks)]
    names = [t.spec.name for t in tasks]
    shared = shared_layer(model.backbone)
    log, window = [], torch.zeros(len(tasks))
    model.train()
    for step in tqdm(range(1, steps + 1), desc="multitask", unit="step", dynamic_ncols=True):
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step - 1, steps, lr, WARMUP_FRACTION, MIN_LR_RATIO)
        losses = [task_loss(model, name, t.train, next(rows))
                  for name, t, rows in zip(names, tasks, batches, strict=True)]
        values = torch.tensor([loss.item() for loss in losses])
        if not values.isfinite().all():
            raise TrainingDiverged(f"step {step}: task losses {values.tolist()}; try a lower lr (now {lr})")
        balancer.update(losses, shared)  # before backward: it reads the task losses' graph
        balancer.weighted_loss(losses).backward()
        clip_gradients(model, GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window += values
        if step % log_every == 0 or step == steps:
            n = step - (log[-1]["step"] if log else 0)
            log.append({"step": step, "losses": dict(zip(names, (window / n).tolist(), strict=True)),
                        "weights": dict(zip(names, balancer.weights, strict=True))})
            window.zero_()
    return log


def multitask_finetune(model_folder: str | Path, tasks: list[TaskSpec], balancer: Balancer = "gradnorm",
                       alpha: float = 1.5, steps: int = 300, batch_size: int = 32, lr: float = 1e-3,
                       seed: int = 0, out: str | Path | None = None, log_every: int = 10,
                       max_len: int | None = None, causal: bool = False) -> MultitaskResult:
    """Fine-tune one backbone on several tasks at once; if `out`, write a model folder with every head.

    `alpha` is GradNorm's asymmetry (ignored for "equal"). The folder also holds metrics.json
    (dev metrics, final weights) and metrics.jsonl (the per-task loss and weight log).
    """
    names = [spec.name for spec in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"head names must be distinct, got {names}")
    torch.manual_seed(seed)
    folder = Path(model_folder)
    tokenizer = Tokenizer.from_file(str(tokenizer_file(folder)))
    backbone = load_model(folder)
    max_len = max_len or backbone.config.seq_len
    data = [_prepare(spec, tokenizer, max_len, seed) for spec in tasks]
    heads = load_heads(folder)
    for t in data:
        heads[t.spec.name] = new_head(t.spec.task, backbone.config.d_model, len(t.labels))
    model = MultiTaskModel(backbone, heads, causal=causal)
    weights = _balancer(balancer, len(tasks), alpha)
    log = _train(model, data, weights, steps, batch_size, lr, seed, log_every)
    dev = {t.spec.name: score(model, t.spec.name, t.dev, t.dev_examples, t.labels, tokenizer, max_len,
                              t.spec.k) for t in data}
    baseline = {t.spec.name: majority_baseline(t.train.gold, t.dev.gold)
                for t in data if t.spec.task == "classify"}
    result = MultitaskResult(dev, baseline, dict(zip(names, weights.weights, strict=True)), log)
    if out is not None:
        settings = {"balancer": balancer, "alpha": alpha, "steps": steps, "batch_size": batch_size, "lr": lr,
                    "seed": seed, "max_len": max_len, "causal": causal,
                    "tasks": {t.spec.name: t.spec.task for t in data}}
        result.model_dir = _write(Path(out), folder, model, data, result, settings)
    return result


def _write(out: Path, source: Path, model: MultiTaskModel, data: list[_TaskData], result: MultitaskResult,
           settings: dict[str, Any]) -> Path:
    """The output model folder: the source's heads.json entries merged with the new heads'."""
    labels = {name: entry["labels"] for name, entry in read_heads(source).items() if "labels" in entry}
    labels.update({t.spec.name: t.labels for t in data})
    spec = {**read_heads(source), **heads_spec(model.heads, labels)}
    metrics = {"dev": result.dev, "majority_baseline": result.majority_baseline, "weights": result.weights}
    log = "".join(json.dumps(record) + "\n" for record in result.log)
    files = [s.spec.train for s in data] + [s.spec.dev for s in data]
    return save_model_folder(out, model.backbone, model.backbone.config, source, spec, config_used=settings,
                             stage="finetune", head_modules=model.heads,
                             parents=[source, *(p for p in files if isinstance(p, Path))],
                             extra={"multitask": settings},
                             files={"metrics.json": metrics, "metrics.jsonl": log})
