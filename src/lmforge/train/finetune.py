"""Single-task fine-tuning of a model folder (classify, ner, embed), as a configuration of the trainer.

A new head is put on the pretrained backbone and both are trained by the one trainer (AdamW,
clipping, the S4 warm-up + cosine schedule, accumulation, bf16, checkpoints and `--resume`,
any data-parallel layout). Dev is scored every `eval_every` steps; the best weights are kept
and training stops after `patience` evaluations without a new best. The output model folder
holds the backbone, every head (heads.json + heads.safetensors) and metrics.json.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from lmforge.artifacts import atomic_write_json
from lmforge.config import to_dict
from lmforge.data.tasks import infer_labels
from lmforge.device import resolve_device
from lmforge.model.bundle import ModelBundle, load_bundle
from lmforge.model.config import ModelConfig
from lmforge.model.folder import save_model_folder
from lmforge.model.heads import (
    ContrastiveEmbeddingHead,
    MultiTaskModel,
    SequenceClassificationHead,
    TokenClassificationHead,
    build_heads,
    heads_spec,
)
from lmforge.model.inputs import encode_words, word_tags
from lmforge.model.xl import Transformer
from lmforge.parallel import Layout
from lmforge.train.checkpoint import latest_checkpoint, read_weights
from lmforge.train.engine import Engine
from lmforge.train.finetune_config import FinetuneConfig, FinetuneOptim, TaskData, TaskSettings
from lmforge.train.finetune_data import (
    Encoded,
    Example,
    batch,
    encode_examples,
    hold_out,
    read_examples,
)
from lmforge.train.task_metrics import accuracy, entity_prf, macro_f1, majority_baseline, recall_at_k
from lmforge.train.task_objective import TaskObjective
from lmforge.train.trainer import Monitor, PlugPoints, Trainer, apply_transforms, seed_everything

EVAL_BATCH = 128


def dev_metric(task: str, k: int) -> str:
    """The metric early stopping maximises."""
    return {"classify": "accuracy", "ner": "f1", "embed": f"recall@{k}"}[task]


def new_head(task: TaskSettings, d_model: int, n_labels: int) -> torch.nn.Module:
    """A freshly initialised head for `task`."""
    if task.task == "classify":
        return SequenceClassificationHead(d_model, n_labels, dropout=task.dropout)
    if task.task == "ner":
        return TokenClassificationHead(d_model, n_labels, dropout=task.dropout)
    return ContrastiveEmbeddingHead(d_model, task.dim, task.temperature)


def continues_head(entry: dict[str, Any] | None, task: str, labels: list[str]) -> bool:
    """Whether the source folder's head of the same name is trained further rather than replaced:
    same task and the same labels in the same order (quantisation-aware and incremental training
    start from a fine-tuned head; another label set needs a fresh one)."""
    return entry is not None and entry["task"] == task and entry.get("labels", []) == labels


@torch.no_grad()
def predict(model: torch.nn.Module, head: str, task: str, data: Encoded) -> list[Any]:
    """Per example: class id (classify), per-token tag ids (ner) or a unit embedding (embed).

    `model` may be wrapped for data parallel: every rank of a sharded model must call this.
    """
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))  # ONNX Runtime: none
    out: list[Any] = []
    for start in range(0, len(data.ids), EVAL_BATCH):
        rows = range(start, min(start + EVAL_BATCH, len(data.ids)))
        idx, mask, _ = batch(data, rows)
        _, outputs = model(head, idx.to(device), mask.to(device))
        outputs = outputs.float().cpu()
        if task == "classify":
            out += outputs.argmax(-1).tolist()
        elif task == "ner":
            out += [row[: len(data.ids[i])] for row, i in zip(outputs.argmax(-1).tolist(), rows, strict=True)]
        else:
            out += list(outputs.numpy())
    model.train(was_training)
    return out


@dataclass
class Split:
    examples: list[Example]
    encoded: Encoded


def score(model: torch.nn.Module, head: str, task: str, split: Split, label_set: list[str],
          tokenizer: Tokenizer, max_len: int, k: int) -> dict[str, float]:
    """The task's metrics on one split, by the definitions in `task_metrics`."""
    predictions = predict(model, head, task, split.encoded)
    gold = split.encoded.gold
    if task == "classify":
        names = [label_set[i] for i in predictions]
        return {"accuracy": accuracy(gold, names), "macro_f1": macro_f1(gold, names)}
    if task == "ner":
        predicted = [word_tags(encode_words(tokenizer, ex.tokens, max_len)[1], tags, label_set,
                               len(ex.tokens)) for ex, tags in zip(split.examples, predictions, strict=True)]
        prf = entity_prf(gold, predicted)
        return {"precision": prf["precision"], "recall": prf["recall"], "f1": prf["f1"]}
    return {f"recall@{k}": recall_at_k(np.stack(predictions), gold, k)}


@dataclass
class TaskSplits:
    """One task's data, read, split and tokenised; the label set is inferred from train."""

    settings: TaskSettings
    labels: list[str]
    splits: dict[str, Split]

    @classmethod
    def read(cls, settings: TaskSettings, tokenizer: Tokenizer, max_len: int, seed: int,
             labels: list[str] | None = None) -> TaskSplits:
        """`labels` fixes the label set (a label outside it is a DataError); default: train's."""
        d: TaskData = settings.data
        train = read_examples(d.train, settings.task, d.text_column, d.label_column)
        if d.dev is None:
            train, dev = hold_out(train, d.dev_fraction, seed)
        else:
            dev = read_examples(d.dev, settings.task, d.text_column, d.label_column)
        named = {"train": train, "dev": dev}
        if d.test is not None:
            named["test"] = read_examples(d.test, settings.task, d.text_column, d.label_column)
        if labels is None:
            labels = infer_labels(train) if settings.task != "embed" else []
        return cls(settings, labels, {
            name: Split(examples, encode_examples(tokenizer, examples, settings.task, labels, max_len))
            for name, examples in named.items()})

    def score(self, model: torch.nn.Module, split: str, tokenizer: Tokenizer,
              max_len: int) -> dict[str, float]:
        s = self.settings
        return score(model, s.name, s.task, self.splits[split], self.labels, tokenizer, max_len, s.k)


def head_usage(task: TaskSettings, causal: bool, max_len: int) -> dict[str, Any]:
    """How a head was trained, kept in its heads.json entry so evaluation and serving run it alike."""
    d = task.data
    return {"causal": causal, "max_len": max_len, "text_column": d.text_column,
            "label_column": d.label_column, "k": task.k}


def output_spec(source: dict[str, Any], heads: torch.nn.ModuleDict, new: list[TaskSplits], causal: bool,
                max_len: int) -> dict[str, Any]:
    """heads.json of an output folder: the source's entries as they were, then each new head's
    entry with its label names and how it was trained."""
    fresh = torch.nn.ModuleDict({t.settings.name: heads[t.settings.name] for t in new})
    entries = heads_spec(fresh, {t.settings.name: t.labels for t in new})
    usage = {t.settings.name: head_usage(t.settings, causal, max_len) for t in new}
    return {**source, **{name: {**entry, "usage": usage[name]} for name, entry in entries.items()}}


def checkpoint_root(out: Path) -> Path:
    """Where a fine-tuning run keeps its checkpoints: RUN/checkpoints/NAME for RUN/models/NAME."""
    return (out.parent.parent if out.parent.name == "models" else out.parent) / "checkpoints" / out.name


def build_engine(model: MultiTaskModel, settings: FinetuneOptim, layout: Layout) -> Engine:
    dp = layout.settings.dp
    local = settings.batch_size // dp
    engine = Engine(model, layout, local, min(settings.micro_batch_size or local, local),
                    settings.precision == "bf16")
    if settings.compile:
        engine.compile()
    if layout.distributed:  # each data-parallel slice draws its own dropout masks
        torch.manual_seed(settings.seed + 1_000_003 * (1 + layout.random_stream))
    return engine


def final_model(root: Path, config: ModelConfig, spec: dict[str, Any]) -> MultiTaskModel:
    """The best (or last) weights of a run, gathered whole from its checkpoint, on the CPU."""
    best = latest_checkpoint(root / "best") or latest_checkpoint(root)
    model = MultiTaskModel(Transformer(config), build_heads(spec, config.d_model))
    model.load_state_dict(read_weights(best))
    return model.eval()


@dataclass
class FinetuneResult:
    model_dir: Path
    dev: dict[str, float]
    test: dict[str, float] | None
    steps: int
    best_step: int | None
    history: list[dict] = field(default_factory=list)


def finetune(cfg: FinetuneConfig, resume: str | None = "auto", layout: Layout | None = None,
             plugs: PlugPoints | None = None, labels: list[str] | None = None) -> FinetuneResult:
    """Fine-tune `cfg.model` on one task; write the output model folder with metrics.json.

    `labels` fixes the head's label set instead of inferring it from train: incremental training
    continues a head over all its labels on data that shows only some of them.
    """
    layout = layout or Layout.single(resolve_device(cfg.device))
    seed_everything(cfg.seed)
    source = load_bundle(cfg.model)
    source.model.train()
    max_len = cfg.max_len or source.config.seq_len
    task = TaskSplits.read(cfg, source.tokenizer, max_len, cfg.seed, labels)
    heads = source.heads
    if not continues_head(source.spec.get(cfg.name), cfg.task, task.labels):
        heads[cfg.name] = new_head(cfg, source.config.d_model, len(task.labels))
    plugs = plugs or PlugPoints()
    model = apply_transforms(MultiTaskModel(source.model, heads, causal=cfg.causal), plugs.transforms)
    spec = output_spec(source.spec, heads, [task], cfg.causal, max_len)
    n_train = len(task.splits["train"].encoded.ids)
    steps = math.ceil(cfg.epochs * n_train / cfg.batch_size) if cfg.epochs else cfg.steps
    settings = cfg.model_copy(update={"steps": steps})
    engine = build_engine(model, settings, layout)
    local = cfg.batch_size // layout.settings.dp
    objective = TaskObjective(cfg.name, cfg.task, task.splits["train"].encoded, cfg.batch_size, cfg.seed,
                              layout.dp_rank * local, local)
    metric = dev_metric(cfg.task, cfg.k)
    monitor = Monitor(lambda: task.score(engine.module, "dev", source.tokenizer, max_len), metric=metric,
                      higher_is_better=True, on_plateau="stop", patience=cfg.patience, keep_best=True)
    out = cfg.output
    root = checkpoint_root(out)
    architecture = {"model": to_dict(source.config), "heads": spec}
    result = Trainer(engine, objective, settings, monitor, root, architecture, f"finetune {cfg.name}",
                     plugs).fit(resume)
    metrics: dict[str, Any] = {"task": cfg.task, "steps": result.steps, "best_step": result.best_step,
                               "dev": result.last}
    if "test" in task.splits:
        metrics["test"] = task.score(engine.module, "test", source.tokenizer, max_len)
    if cfg.task == "classify":
        train_gold = task.splits["train"].encoded.gold
        metrics["majority_baseline"] = {name: majority_baseline(train_gold, task.splits[name].encoded.gold)
                                        for name in ("dev", "test") if name in task.splits}
    if layout.rank == 0:
        d = cfg.data
        final = final_model(root, source.config, spec)
        save_model_folder(out, final.backbone, source.config, cfg.model, spec, config_used=to_dict(cfg),
                          stage="finetune", head_modules=final.heads,
                          parents=[cfg.model, *(p for p in (d.train, d.dev, d.test) if p)],
                          files={"metrics.json": metrics})
    return FinetuneResult(out, metrics["dev"], metrics.get("test"), result.steps, result.best_step,
                          result.history)


def evaluate(model_folder: str | Path, task: str, data: str | Path, head: str | None = None,
             text_column: str | int | None = None, label_column: str | int | None = None,
             device: str = "auto") -> dict[str, float]:
    """Score a fine-tuned model folder's head on a data file and merge the result into its metrics.json."""
    data = Path(data)
    bundle = load_bundle(model_folder, resolve_device(device))
    head = head or task
    metrics = score_file(bundle, head, task, data, text_column, label_column)
    metrics_file = bundle.folder / "metrics.json"
    recorded = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    recorded.setdefault("evaluations", {}).setdefault(head, {})[str(data.resolve())] = metrics
    atomic_write_json(metrics_file, recorded)
    return metrics


def score_file(bundle: ModelBundle, head: str, task: str, data: Path, text_column: str | int | None = None,
               label_column: str | int | None = None,
               model: torch.nn.Module | None = None) -> dict[str, float]:
    """Score head `head` of `bundle` on a data file.

    Attention direction, truncation, k and (unless given) the columns are those the head was
    trained with, read from its heads.json entry, so every head of a multi-task folder is
    scored its own way. `model` replaces the bundle's own task model: another runtime of the
    same head (ONNX Runtime, say), called as `model(head, idx, mask) -> (loss, outputs)`.
    """
    entry = bundle.head(head, task)
    usage = bundle.usage(head)
    max_len = usage.get("max_len", bundle.config.seq_len)
    text_column = usage.get("text_column", "text") if text_column is None else text_column
    label_column = usage.get("label_column", "label") if label_column is None else label_column
    examples = read_examples(data, task, text_column, label_column)
    label_set = entry.get("labels", [])
    split = Split(examples, encode_examples(bundle.tokenizer, examples, task, label_set, max_len))
    model = bundle.task_model(head) if model is None else model
    return score(model, head, task, split, label_set, bundle.tokenizer, max_len,
                 usage.get("k", 1))
