"""Settings of fine-tuning (`lmforge finetune`) and multi-task fine-tuning (`lmforge multitask`).

Both are configurations of the one trainer: the optimisation settings are `OptimSettings` (with
fine-tuning's defaults), and a task is described by the same `TaskSettings` in both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lmforge.config import Config
from lmforge.parallel.config import ParallelSettings
from lmforge.train.config import OptimSettings

Task = Literal["classify", "ner", "embed"]


class TaskData(Config):
    train: Path
    """Training file: TSV/CSV/JSONL text + label rows (classify, embed) or CoNLL (ner)."""
    dev: Path | None = None
    """Dev file for early stopping and scoring; without one, a seeded share of train is held out."""
    test: Path | None = None
    """Optional test file, scored once with the best weights."""
    text_column: str | int = "text"
    """Text column name (or 0-based position for a header-less file, e.g. AG News)."""
    label_column: str | int = "label"
    """Label column name (or position); for embed the label is only used to score recall@k."""
    dev_fraction: float = Field(0.1, gt=0, lt=1)
    """Share of train held out as dev when no dev file is given."""


class TaskSettings(Config):
    """One task on the shared backbone: what it is, its data, and its head's settings."""

    task: Task
    """classify: pooled -> label; ner: BIO tag per word; embed: SimCSE sentence embeddings."""
    data: TaskData
    """Where the examples are and which columns hold them."""
    head: str | None = None
    """Name of the task's head in the model folder (default: the task kind)."""
    k: int = Field(1, gt=0)
    """embed: recall@k is the dev metric and reported score."""
    dim: int = Field(64, gt=0)
    """embed: size of the projected unit embedding."""
    temperature: float = Field(0.05, gt=0)
    """embed: InfoNCE temperature (SimCSE's 0.05)."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """classify/ner: dropout before the head's classifier (BERT's 0.1)."""

    @property
    def name(self) -> str:
        return self.head or self.task


class FinetuneOptim(OptimSettings):
    """The shared optimisation settings with fine-tuning's defaults."""

    steps: int = Field(300, gt=0)
    """Optimizer steps (upper bound: early stopping may end sooner)."""
    batch_size: int = Field(32, gt=1)
    """Examples per step (per task, for multi-task; at least 2: SimCSE needs in-batch negatives)."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW decoupled weight decay on matrices (BERT fine-tuning's 0.01)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW moment coefficients (BERT's)."""
    max_len: int | None = Field(None, gt=0)
    """Truncate examples to this many tokens; default the model's seq_len."""
    causal: bool = False
    """Attention of the task heads: False = bidirectional encoder (BERT-style fine-tuning)."""
    parallel: ParallelSettings = ParallelSettings()
    """How `--nproc N` workers split each batch: dp_replicate (DDP) and/or dp_shard (FSDP2); no tp/pp."""


class FinetuneConfig(TaskSettings, FinetuneOptim):
    """`lmforge finetune MODEL --task ... --data ...`: one new head on a model folder's backbone."""

    model: Path
    """Source model folder (from `lmforge pretrain` or an earlier fine-tune)."""
    out: Path | None = None
    """Output model folder; default: the source folder's name + '-' + head name, beside it."""
    epochs: float | None = Field(None, gt=0)
    """If set, overrides steps: epochs * len(train) / batch_size steps."""
    patience: int = Field(3, gt=0)
    """Stop after this many dev evaluations without a new best (accuracy / entity F1 / recall@k)."""

    @property
    def output(self) -> Path:
        """`out`, or the source folder's name + '-' + head name, beside it."""
        return self.out or self.model.parent / f"{self.model.name}-{self.name}"


class MultitaskConfig(FinetuneOptim):
    """`lmforge multitask CONFIG`: one backbone, one head per task, GradNorm or equal task weights."""

    model: Path
    """Source model folder."""
    tasks: list[TaskSettings] = Field(min_length=2)
    """The tasks trained together; every step draws one batch of each."""
    out: Path
    """Output model folder (backbone, every head, metrics.json, metrics.jsonl)."""
    balancer: Literal["gradnorm", "equal"] = "gradnorm"
    """gradnorm: learnable weights balancing gradient norms (Chen et al. 2018); equal: all 1."""
    alpha: float = Field(1.5, ge=0)
    """GradNorm asymmetry: higher pulls harder toward equal training rates (paper: 0.12 to 3)."""

    @model_validator(mode="after")
    def _distinct_heads(self) -> MultitaskConfig:
        names = [t.name for t in self.tasks]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"head names must be distinct; {', '.join(duplicated)} appears twice "
                             "(give each task its own `head`)")
        if self.micro_batch_size not in (None, self.batch_size):
            raise ValueError("multi-task steps do not accumulate: leave micro_batch_size unset")
        return self
