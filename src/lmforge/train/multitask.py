"""Multi-task fine-tuning: one shared backbone, one head per task, task losses balanced by GradNorm.

A configuration of the one trainer. Every step draws one batch per task and combines the task
losses with learnable GradNorm weights (Chen et al. 2018), which keep the tasks' gradient norms
at the last shared layer in balance, or with equal fixed weights; the weights' update is a step
callback. The step count is fixed (no early stopping: with several dev metrics there is no
single best step); each task's dev metric is scored at every evaluation and at the end.
Batching, tokenisation, heads and scoring are the single-task fine-tuning ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch import Tensor

from lmforge.config import to_dict
from lmforge.device import resolve_device
from lmforge.model.bundle import load_bundle
from lmforge.model.folder import save_model_folder
from lmforge.model.gradnorm import FixedWeights, GradNorm
from lmforge.model.heads import MultiTaskModel, shared_layer
from lmforge.parallel import Layout
from lmforge.train.finetune import (
    TaskSplits,
    build_engine,
    checkpoint_root,
    dev_metric,
    final_model,
    new_head,
    output_spec,
)
from lmforge.train.finetune_config import MultitaskConfig
from lmforge.train.task_metrics import majority_baseline
from lmforge.train.task_objective import BalancerStep, MultiTaskObjective, TaskObjective
from lmforge.train.trainer import Monitor, PlugPoints, Trainer, apply_transforms, seed_everything


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


def multitask(cfg: MultitaskConfig, resume: str | None = "auto", layout: Layout | None = None,
              plugs: PlugPoints | None = None) -> MultitaskResult:
    """Fine-tune one backbone on several tasks at once; write a model folder with every head.

    The folder also holds metrics.json (dev metrics, final weights) and metrics.jsonl (the
    per-task loss and weight log).
    """
    layout = layout or Layout.single(resolve_device(cfg.device))
    seed_everything(cfg.seed)
    source = load_bundle(cfg.model)
    source.model.train()
    max_len = cfg.max_len or source.config.seq_len
    tasks = [TaskSplits.read(t, source.tokenizer, max_len, cfg.seed) for t in cfg.tasks]
    heads = source.heads
    for t in tasks:
        heads[t.settings.name] = new_head(t.settings, source.config.d_model, len(t.labels))
    plugs = plugs or PlugPoints()
    model = apply_transforms(MultiTaskModel(source.model, heads, causal=cfg.causal), plugs.transforms)
    spec = output_spec(source.spec, heads, tasks, cfg.causal, max_len)
    engine = build_engine(model, cfg, layout)
    local = cfg.batch_size // layout.settings.dp
    names = [t.settings.name for t in tasks]
    n = len(tasks)
    balancer = GradNorm(n, cfg.alpha) if cfg.balancer == "gradnorm" else FixedWeights([1.0] * n)
    objective = MultiTaskObjective(
        [TaskObjective(t.settings.name, t.settings.task, t.splits["train"].encoded, cfg.batch_size,
                       cfg.seed + i, layout.dp_rank * local, local) for i, t in enumerate(tasks)],
        balancer, shared_layer(model.backbone), layout.settings.dp, engine.count_targets,
        _sum_over_replicas(layout))
    plugs.callbacks = [BalancerStep(objective, names), *plugs.callbacks]

    def evaluate() -> dict[str, float]:
        return {f"{t.settings.name}/{k}": v for t in tasks
                for k, v in t.score(engine.module, "dev", source.tokenizer, max_len).items()}

    first = cfg.tasks[0]
    monitor = Monitor(evaluate, metric=f"{first.name}/{dev_metric(first.task, first.k)}",
                      higher_is_better=True, on_plateau="none")
    root = checkpoint_root(cfg.out)
    architecture = {"model": to_dict(source.config), "heads": spec}
    result = Trainer(engine, objective, cfg, monitor, root, architecture, "multitask", plugs).fit(resume)
    dev = {t.settings.name: t.score(engine.module, "dev", source.tokenizer, max_len) for t in tasks}
    baseline = {t.settings.name: majority_baseline(t.splits["train"].encoded.gold,
                                                   t.splits["dev"].encoded.gold)
                for t in tasks if t.settings.task == "classify"}
    log = _log(result.history, names, cfg.log_every)
    outcome = MultitaskResult(dev, baseline, dict(zip(names, balancer.weights, strict=True)), log, cfg.out)
    if layout.rank == 0:
        final = final_model(root, source.config, spec)
        metrics = {"dev": dev, "majority_baseline": baseline, "weights": outcome.weights}
        files = [p for t in cfg.tasks for p in (t.data.train, t.data.dev, t.data.test) if p]
        save_model_folder(cfg.out, final.backbone, source.config, cfg.model, spec, config_used=to_dict(cfg),
                          stage="finetune", head_modules=final.heads, parents=[cfg.model, *files],
                          files={"metrics.json": metrics,
                                 "metrics.jsonl": "".join(json.dumps(r) + "\n" for r in log)})
    return outcome


def _sum_over_replicas(layout: Layout) -> Callable[[Tensor], Tensor] | None:
    """Add a rank's share (a loss, a gradient) over the data-parallel replicas, in place."""
    if not layout.distributed:
        return None
    group = layout.mesh["dp_replicate"].get_group()

    def add(share: Tensor) -> Tensor:
        dist.all_reduce(share, group=group)
        return share

    return add


def _log(history: list[dict[str, Any]], names: list[str], every: int) -> list[dict[str, Any]]:
    """Every `every` steps (and the last): the mean task losses since the previous record, the weights."""
    log, window = [], []
    for record in history:
        window.append(record)
        if record["step"] % every == 0 or record is history[-1]:
            log.append({"step": record["step"],
                        "losses": {n: sum(r[f"loss/{n}"] for r in window) / len(window) for n in names},
                        "weights": {n: record[f"weight/{n}"] for n in names}})
            window = []
    return log
