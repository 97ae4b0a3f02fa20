"""Settings of the fine-tuning stage (`lmforge finetune MODEL --task ... --data ...`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from lmforge.config import Config

Task = Literal["classify", "ner", "embed"]


class FinetuneData(Config):
    train: Path
    """Training file: TSV/CSV/JSONL text + label rows (classify, embed) or CoNLL (ner)."""
    dev: Path | None = None
    """Dev file for early stopping; without one, a seeded 10% of train is held out."""
    test: Path | None = None
    """Optional test file, scored once with the best weights."""
    text_column: str | int = "text"
    """Text column name (or 0-based position for a header-less file, e.g. AG News)."""
    label_column: str | int = "label"
    """Label column name (or position); for embed the label is only used to score recall@k."""
    dev_fraction: float = Field(0.1, gt=0, lt=1)
    """Share of train held out as dev when no dev file is given."""


class FinetuneConfig(Config):
    model: Path
    """Source model folder (from `lmforge pretrain` or an earlier fine-tune)."""
    task: Task
    """classify: pooled -> label; ner: BIO tag per word; embed: SimCSE sentence embeddings."""
    data: FinetuneData
    """Where the examples are and which columns hold them."""
    out: Path | None = None
    """Output model folder; default: the source folder's name + '-' + task, beside it."""
    steps: int = Field(300, gt=0)
    """Optimizer steps (upper bound: early stopping may end sooner)."""
    epochs: float | None = Field(None, gt=0)
    """If set, overrides steps: epochs * len(train) / batch_size steps."""
    batch_size: int = Field(32, gt=1)
    """Examples per step (at least 2: SimCSE needs in-batch negatives)."""
    lr: float = Field(1e-3, gt=0)
    """Peak rate. 1e-3 suits the 32-128 wide test/tiny models; BERT-sized models want 2e-5..1e-4."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW decoupled weight decay on matrices (BERT fine-tuning's 0.01)."""
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of the steps spent in linear warm-up, then cosine decay (the S4 schedule)."""
    min_lr_ratio: float = Field(0.1, gt=0, le=1)
    """Cosine decays to lr * min_lr_ratio."""
    grad_clip: float = Field(1.0, ge=0)
    """Clip the global gradient norm to this value; 0 disables clipping."""
    max_len: int | None = Field(None, gt=0)
    """Truncate examples to this many tokens; default the model's seq_len."""
    eval_every: int = Field(50, gt=0)
    """Score dev every N steps (and at the end); the best weights are kept."""
    patience: int = Field(3, gt=0)
    """Stop after this many dev evaluations without a new best (accuracy / entity F1 / recall@k)."""
    seed: int = 0
    """Seeds the head initialisation, dropout, batch order and the dev hold-out."""
    causal: bool = False
    """Attention of the task heads: False = bidirectional encoder (BERT-style fine-tuning)."""
    temperature: float = Field(0.05, gt=0)
    """embed: InfoNCE temperature (SimCSE's 0.05)."""
    dim: int = Field(64, gt=0)
    """embed: size of the projected unit embedding."""
    k: int = Field(1, gt=0)
    """embed: recall@k is the dev metric and reported score."""


class MultitaskTaskSettings(Config):
    task: Task
    """classify, ner or embed."""
    train: Path
    """Training file of this task (same formats as `lmforge finetune`)."""
    dev: Path | None = None
    """Dev file; without one, a seeded 10% of train is held out."""
    head: str | None = None
    """Name of this task's head in the model folder (default: the task kind; must be distinct)."""
    text_column: str | int = "text"
    """Text column name (or 0-based position)."""
    label_column: str | int = "label"
    """Label column name (or position)."""
    k: int = Field(1, gt=0)
    """embed: recall@k is the reported score."""


class MultitaskConfig(Config):
    """`lmforge multitask CONFIG`: one backbone, one head per task, GradNorm or equal task weights."""

    model: Path
    """Source model folder."""
    tasks: list[MultitaskTaskSettings] = Field(min_length=2)
    """The tasks trained together; every step draws one batch of each."""
    out: Path
    """Output model folder (backbone, every head, metrics.json, metrics.jsonl)."""
    balancer: Literal["gradnorm", "equal"] = "gradnorm"
    """gradnorm: learnable weights balancing gradient norms (Chen et al. 2018); equal: all 1."""
    alpha: float = Field(1.5, ge=0)
    """GradNorm asymmetry: higher pulls harder toward equal training rates (paper: 0.12 to 3)."""
    steps: int = Field(300, gt=0)
    """Optimizer steps (fixed: no early stopping across several dev metrics)."""
    batch_size: int = Field(32, gt=1)
    """Examples per task per step."""
    lr: float = Field(1e-3, gt=0)
    """Peak rate of the warm-up + cosine schedule."""
    seed: int = 0
    """Seeds heads, dropout, batch order and dev hold-outs."""
    log_every: int = Field(10, gt=0)
    """Steps between metrics.jsonl records of per-task loss and weight."""
    max_len: int | None = Field(None, gt=0)
    """Truncate examples to this many tokens; default the model's seq_len."""
    causal: bool = False
    """Attention of the task heads: False = bidirectional encoder."""
