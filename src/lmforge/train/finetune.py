"""Single-task fine-tuning of a model folder (classify, ner, embed) and evaluation of the result.

A new head is put on the pretrained backbone and both are trained with AdamW, clipping and the
S4 warm-up + cosine schedule. Dev is scored every `eval_every` steps; the best weights are kept
and training stops after `patience` evaluations without a new best. The output model folder
holds the backbone, every head (heads.json + heads.safetensors) and metrics.json.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from lmforge.artifacts import ArtifactError, atomic_write_json, read_manifest
from lmforge.config import to_dict
from lmforge.data.tasks import infer_labels
from lmforge.model.folder import load_heads, load_model, read_heads, save_model_folder, tokenizer_file
from lmforge.model.heads import (
    ContrastiveEmbeddingHead,
    MultiTaskModel,
    SequenceClassificationHead,
    TokenClassificationHead,
    heads_spec,
)
from lmforge.train.finetune_config import FinetuneConfig
from lmforge.train.finetune_data import (
    Encoded,
    Example,
    batch,
    encode_examples,
    encode_words,
    hold_out,
    read_examples,
    shuffled_batches,
    word_tags,
)
from lmforge.train.loop import TrainingDiverged, adamw, clip_gradients
from lmforge.train.schedule import warmup_cosine
from lmforge.train.task_metrics import accuracy, entity_prf, macro_f1, majority_baseline, recall_at_k

EVAL_BATCH = 128


@dataclass
class FinetuneResult:
    model_dir: Path
    dev: dict[str, float]
    test: dict[str, float] | None
    steps: int
    best_step: int
    history: list[dict] = field(default_factory=list)


def dev_metric(task: str, k: int) -> str:
    """The metric early stopping maximises."""
    return {"classify": "accuracy", "ner": "f1", "embed": f"recall@{k}"}[task]


def new_head(task: str, d_model: int, n_labels: int, dim: int = 64,
             temperature: float = 0.05) -> torch.nn.Module:
    """A freshly initialised head for `task`; `dim` and `temperature` only matter for embed."""
    if task == "classify":
        return SequenceClassificationHead(d_model, n_labels)
    if task == "ner":
        return TokenClassificationHead(d_model, n_labels)
    return ContrastiveEmbeddingHead(d_model, dim, temperature)


@torch.no_grad()
def predict(model: MultiTaskModel, head: str, data: Encoded) -> list[Any]:
    """Per example: class id (classify), per-token tag ids (ner) or a unit embedding (embed)."""
    was_training = model.training
    model.eval()
    out: list[Any] = []
    for start in range(0, len(data.ids), EVAL_BATCH):
        rows = range(start, min(start + EVAL_BATCH, len(data.ids)))
        idx, mask, _ = batch(data, rows)
        _, outputs = model.forward_task(head, idx, mask)
        if model.heads[head].task == "classify":
            out += outputs.argmax(-1).tolist()
        elif model.heads[head].task == "ner":
            out += [row[: len(data.ids[i])] for row, i in zip(outputs.argmax(-1).tolist(), rows, strict=True)]
        else:
            out += list(outputs.numpy())
    model.train(was_training)
    return out


def score(model: MultiTaskModel, head: str, data: Encoded, examples: list[Example], label_set: list[str],
          tokenizer: Tokenizer, max_len: int, k: int) -> dict[str, float]:
    """The task's metrics on one split, by the definitions in `task_metrics`."""
    predictions = predict(model, head, data)
    task = model.heads[head].task
    if task == "classify":
        names = [label_set[i] for i in predictions]
        return {"accuracy": accuracy(data.gold, names), "macro_f1": macro_f1(data.gold, names)}
    if task == "ner":
        predicted = [word_tags(encode_words(tokenizer, ex.tokens, max_len)[1], tags, label_set,
                               len(ex.tokens)) for ex, tags in zip(examples, predictions, strict=True)]
        prf = entity_prf(data.gold, predicted)
        return {"precision": prf["precision"], "recall": prf["recall"], "f1": prf["f1"]}
    return {f"recall@{k}": recall_at_k(np.stack(predictions), data.gold, k)}


@dataclass
class _Split:
    examples: list[Example]
    encoded: Encoded


def _splits(cfg: FinetuneConfig, tokenizer: Tokenizer, max_len: int) -> tuple[dict[str, _Split], list[str]]:
    d = cfg.data
    train = read_examples(d.train, cfg.task, d.text_column, d.label_column)
    if d.dev is None:
        train, dev = hold_out(train, d.dev_fraction, cfg.seed)
    else:
        dev = read_examples(d.dev, cfg.task, d.text_column, d.label_column)
    named = {"train": train, "dev": dev}
    if d.test is not None:
        named["test"] = read_examples(d.test, cfg.task, d.text_column, d.label_column)
    label_set = infer_labels(train) if cfg.task != "embed" else []
    return {name: _Split(ex, encode_examples(tokenizer, ex, cfg.task, label_set, max_len))
            for name, ex in named.items()}, label_set


def task_loss(model: MultiTaskModel, head: str, data: Encoded, rows: list[int]) -> torch.Tensor:
    """The training loss of `head` on the chosen rows of `data`."""
    idx, mask, labels = batch(data, rows)
    if model.heads[head].task == "embed":  # unsupervised SimCSE: same batch, another dropout mask
        loss, _ = model.forward_task(head, idx, mask, positive=idx, positive_mask=mask)
    else:
        loss, _ = model.forward_task(head, idx, mask, labels=labels)
    return loss


def _train(model: MultiTaskModel, cfg: FinetuneConfig, splits: dict[str, _Split], evaluate_dev,
           total: int) -> tuple[int, int, list[dict]]:
    """The optimisation loop with early stopping; leaves the best weights in `model`."""
    optimizer = adamw(model, cfg.lr, cfg.weight_decay)
    name = dev_metric(cfg.task, cfg.k)
    best, best_step, best_state, bad, history = -math.inf, 0, None, 0, []
    batches = shuffled_batches(len(splits["train"].encoded.ids), cfg.batch_size, cfg.seed)
    model.train()
    bar = tqdm(total=total, desc=f"finetune {cfg.task}", unit="step", dynamic_ncols=True)
    step = 0
    while step < total and bad < cfg.patience:
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, total, cfg.lr, cfg.warmup_fraction, cfg.min_lr_ratio)
        loss = task_loss(model, cfg.task, splits["train"].encoded, next(batches))
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(f"step {step}: loss is {loss.item()}; try a lower lr (now {cfg.lr})")
        loss.backward()
        clip_gradients(model, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        record = {"step": step, "loss": loss.item()}
        if step % cfg.eval_every == 0 or step == total:
            record[name] = evaluate_dev()[name]
            if record[name] > best:
                best, best_step, best_state, bad = record[name], step, copy.deepcopy(model.state_dict()), 0
            else:
                bad += 1
            bar.set_postfix(loss=f"{record['loss']:.3f}", **{name: f"{record[name]:.3f}"})
        history.append(record)
        bar.update(1)
    bar.close()
    model.load_state_dict(best_state)
    return step, best_step, history


def finetune(cfg: FinetuneConfig) -> FinetuneResult:
    """Fine-tune `cfg.model` on one task; write the output model folder with metrics.json."""
    torch.manual_seed(cfg.seed)
    tokenizer = Tokenizer.from_file(str(tokenizer_file(cfg.model)))
    backbone = load_model(cfg.model)
    max_len = cfg.max_len or backbone.config.seq_len
    splits, label_set = _splits(cfg, tokenizer, max_len)
    heads = load_heads(cfg.model)
    heads[cfg.task] = new_head(cfg.task, backbone.config.d_model, len(label_set), cfg.dim, cfg.temperature)
    model = MultiTaskModel(backbone, heads, causal=cfg.causal)

    def evaluate_split(name: str) -> dict[str, float]:
        split = splits[name]
        return score(model, cfg.task, split.encoded, split.examples, label_set, tokenizer, max_len, cfg.k)

    n_train = len(splits["train"].encoded.ids)
    total = math.ceil(cfg.epochs * n_train / cfg.batch_size) if cfg.epochs else cfg.steps
    steps, best_step, history = _train(model, cfg, splits, lambda: evaluate_split("dev"), total)
    metrics: dict[str, Any] = {"task": cfg.task, "steps": steps, "best_step": best_step,
                               "dev": evaluate_split("dev")}
    if "test" in splits:
        metrics["test"] = evaluate_split("test")
    if cfg.task == "classify":
        train_gold = splits["train"].encoded.gold
        metrics["majority_baseline"] = {name: majority_baseline(train_gold, splits[name].encoded.gold)
                                        for name in ("dev", "test") if name in splits}
    model_dir = _write(cfg, model, label_set, max_len, metrics)
    return FinetuneResult(model_dir, metrics["dev"], metrics.get("test"), steps, best_step, history)


def _write(cfg: FinetuneConfig, model: MultiTaskModel, label_set: list[str], max_len: int,
           metrics: dict[str, Any]) -> Path:
    """The output model folder: source heads.json entries merged with the new head's."""
    labels = {name: entry["labels"] for name, entry in read_heads(cfg.model).items() if "labels" in entry}
    labels[cfg.task] = label_set
    spec = {**read_heads(cfg.model), **heads_spec(model.heads, labels)}
    d = cfg.data
    usage = {"task": cfg.task, "head": cfg.task, "causal": cfg.causal, "max_len": max_len,
             "text_column": d.text_column, "label_column": d.label_column, "k": cfg.k}
    out = cfg.out or cfg.model.parent / f"{cfg.model.name}-{cfg.task}"
    return save_model_folder(out, model.backbone, model.backbone.config, cfg.model, spec,
                             config_used=to_dict(cfg), stage="finetune", head_modules=model.heads,
                             parents=[cfg.model, *(p for p in (d.train, d.dev, d.test) if p)],
                             extra={"finetune": usage}, files={"metrics.json": metrics})


def evaluate(model_folder: str | Path, task: str, data: str | Path, head: str | None = None,
             text_column: str | int | None = None, label_column: str | int | None = None) -> dict[str, float]:
    """Score a fine-tuned model folder on a data file and merge the result into its metrics.json.

    Attention direction, truncation, k and (unless given) the columns are those fine-tuning used,
    read from the folder's manifest.
    """
    folder, data = Path(model_folder), Path(data)
    usage = read_manifest(folder).get("finetune", {})
    head = head or task
    spec = read_heads(folder)
    if spec.get(head, {}).get("task") != task:
        raise ArtifactError(f"{folder}: no {task!r} head named {head!r} (heads: {', '.join(spec)})")
    backbone = load_model(folder)
    model = MultiTaskModel(backbone, load_heads(folder), causal=usage.get("causal", False))
    tokenizer = Tokenizer.from_file(str(tokenizer_file(folder)))
    max_len = usage.get("max_len", backbone.config.seq_len)
    text_column = usage.get("text_column", "text") if text_column is None else text_column
    label_column = usage.get("label_column", "label") if label_column is None else label_column
    examples = read_examples(data, task, text_column, label_column)
    label_set = spec[head].get("labels", [])
    encoded = encode_examples(tokenizer, examples, task, label_set, max_len)
    metrics = score(model, head, encoded, examples, label_set, tokenizer, max_len, usage.get("k", 1))
    metrics_file = folder / "metrics.json"
    recorded = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    recorded.setdefault("evaluations", {})[str(data.resolve())] = metrics
    atomic_write_json(metrics_file, recorded)
    return metrics
