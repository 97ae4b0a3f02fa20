"""Settings of `lmforge run`: one section per stage, each with the demo's small defaults.

The defaults are sized so the whole lifecycle runs in minutes on 2 CPU cores (`make demo`);
`configs/*.yaml` give the same lifecycle at real sizes. `device` applies to every stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from lmforge.config import Config
from lmforge.data.curate import CurationSettings
from lmforge.device import DEVICE_PATTERN
from lmforge.model import ModelConfig
from lmforge.tokenizer import PackSettings, TokenizerSettings
from lmforge.train import TrainSettings


class CorpusSettings(Config):
    sources: list[Path] = []
    """Your own JSONL / .txt files or folders; empty means the built-in synthetic corpus."""
    seed: int = 0
    """Seed of the built-in corpus generator."""
    size_mb: float = Field(3.0, gt=0)
    """Size of the built-in corpus in MB of text."""


class RunTokenizer(TokenizerSettings, PackSettings):
    """The tokenizer stage's and the packing stage's own settings."""


class RunCuration(CurationSettings):
    """The curation stage's own settings, and whether the run curates at all."""

    enabled: bool = True
    """Curate the corpus (clean, filter, dedup, anonymise) before training the tokenizer."""


class Split(Config):
    """How many labelled examples of a task go to each split (in file order, after a seeded shuffle)."""

    train: int = Field(gt=1)
    """Examples to fine-tune on."""
    dev: int = Field(gt=1)
    """Examples for early stopping."""
    test: int = Field(gt=1)
    """Examples every reported score is measured on."""


class TaskSplits(Config):
    """The built-in corpus's own tasks (topic classification, NER), split once for every stage."""

    seed: int = 0
    """Seed of the shuffle before splitting."""
    classify_file: Path | None = None
    """Your topic-classification file (TSV with a `text\tlabel` header); default: the built-in corpus's."""
    ner_file: Path | None = None
    """Your NER file (CoNLL: token, tab, BIO tag; blank line between sentences); default: the built-in's."""
    classify: Split = Split(train=1000, dev=200, test=300)
    """Topic classification rows; what is left after these is the serving traffic's pool."""
    ner: Split = Split(train=1000, dev=200, test=400)
    """NER sentences (CoNLL)."""


class FinetuneStage(Config):
    """Fine-tuning the classify and NER heads, from the pretrained model and, as the baseline,
    from a randomly initialised model of the same architecture with the same budget."""

    steps: int = Field(150, gt=0)
    """Optimizer steps of every fine-tuning run (early stopping keeps the best dev weights)."""
    batch_size: int = Field(16, gt=1)
    """Examples per step."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate (warm-up, then cosine decay)."""
    eval_every: int = Field(30, gt=0)
    """Steps between dev evaluations."""
    label_budgets: list[int | None] = [64, None]
    """Training examples per comparison (None: the whole train split, which is also the model every
    later stage uses); pretrained and scratch are fine-tuned at each budget."""


class MultitaskStage(Config):
    """One backbone, three heads (classify, NER, embeddings), balanced by GradNorm."""

    steps: int = Field(100, gt=0)
    """Optimizer steps; each draws one batch of every task."""
    batch_size: int = Field(16, gt=1)
    """Examples per task per step."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate."""
    eval_every: int = Field(25, gt=0)
    """Steps between dev evaluations."""
    balancer: Literal["gradnorm", "equal"] = "gradnorm"
    """gradnorm: task weights learnt to balance gradient norms; equal: all 1."""


class CompressStage(Config):
    """The classifier compressed three ways, then measured side by side."""

    int8_method: Literal["onnx-int8", "dynamic", "static", "weight-only", "qat"] = "onnx-int8"
    """The INT8 method: onnx-int8 (ONNX Runtime dynamic INT8, an export folder) was the best measured
    here (C5: 3.9x smaller, 3.6x faster, no accuracy lost); the others are torchao's, in a model folder."""
    student_layers: int = Field(1, gt=0)
    """Layers of the distilled student (the teacher's width, fewer layers)."""
    distill_steps: int = Field(150, gt=0)
    """Steps of distillation (soft targets at temperature 2, hidden states, hard labels)."""
    prune_mode: Literal["unstructured", "heads", "ffn"] = "ffn"
    """ffn: MLP neurons (issue 11 measured it the cheapest in accuracy); heads; unstructured."""
    prune_sparsity: float = Field(0.5, gt=0, lt=1)
    """Share removed."""
    prune_steps: int = Field(30, ge=0)
    """L1 fine-tuning steps before pruning."""
    report_rounds: int = Field(7, gt=0)
    """Interleaved timing rounds of the compression report."""


class ServeStage(Config):
    """Serving the classifier briefly on 127.0.0.1 to simulated users whose feedback is the truth."""

    requests: int = Field(600, gt=0)
    """Requests of the traffic, drawn from the pool of classification rows no stage trained on."""
    concurrency: int = Field(8, gt=0)
    """Clients sending at once."""
    feedback_share: float = Field(0.3, ge=0, le=1)
    """Share of answers the users rate (+1 right, -1 wrong with the right label)."""
    runtime: Literal["eager", "int8"] = "eager"
    """How the server runs the model folder: eager PyTorch, or dynamic INT8 at load."""
    redis_url: str | None = None
    """Result cache in Redis (default: in-process)."""
    records_url: str | None = None
    """Records database URL (default: a SQLite file in the run folder)."""


class ImproveStage(Config):
    """Mining the worst answers, a simulated reviewer (the truth), and EWC training on the fixes."""

    mine_share: float = Field(0.01, gt=0, le=1)
    """Share of the served requests queued for review, the worst first."""
    ewc_lambda: float = Field(1e5, ge=0)
    """Strength of the pull to the old weights (issue 13's C12: 1e5 kept 0.61 of the old task)."""
    steps: int = Field(30, gt=0)
    """Steps of training on the corrections."""
    batch_size: int = Field(8, gt=1)
    """Corrections per step."""
    lr: float = Field(3e-5, gt=0)
    """Peak learning rate (a handful of corrections must not swamp what the model knows)."""
    replay_ratio: float = Field(0.5, ge=0, lt=1)
    """Share of each batch drawn from the old training split (0: EWC alone). C12 measured replay
    keeping the old task better than EWC alone."""
    fisher_samples: int = Field(256, gt=0)
    """Training examples of the old task the Fisher information is estimated on."""


class AbTestStage(Config):
    """The old and the improved classifier A/B-tested through the server on unseen test rows."""

    users: int = Field(300, gt=1)
    """Simulated users, split between the variants by the hash of their id."""
    requests_per_user: int = Field(3, gt=0)
    """Test rows each user sends and rates."""
    alpha: float = Field(0.05, gt=0, lt=1)
    """Significance level of the analysis (Welch tests, Holm-corrected)."""
    promote: bool = True
    """Promote the winner through the admin API when the analysis says so."""


class RunConfig(Config):
    name: str = "quickstart"
    """Run name: everything goes to ROOT/NAME/."""
    root: Path = Path("runs")
    """Folder holding all runs."""
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    """Device of every stage: auto (CUDA when present), cpu, cuda or cuda:N (train.device is ignored)."""
    stop_after: str | None = None
    """Stop after this stage (e.g. pretrain: the first half only)."""
    corpus: CorpusSettings = CorpusSettings()
    """Where the text comes from."""
    curation: RunCuration = RunCuration()
    """Data curation in front of the tokenizer."""
    tokenizer: RunTokenizer = RunTokenizer()
    """Tokenizer training and packing."""
    model: ModelConfig = ModelConfig(preset="tiny")
    """Architecture of the pretrained model."""
    train: TrainSettings = TrainSettings(steps=600, eval_every=100, checkpoint_every=200)
    """Pretraining settings (600 steps of `tiny` take about two minutes on 2 cores)."""
    sample_prompt: str = "The"
    """Prompt of the sample printed after pretraining."""
    sample_tokens: int = Field(40, gt=0)
    """Tokens to generate for the sample."""
    tasks: TaskSplits = TaskSplits()
    """The labelled tasks every later stage trains and measures on."""
    finetune: FinetuneStage = FinetuneStage()
    """Single-task heads, and the from-scratch baselines."""
    multitask: MultitaskStage = MultitaskStage()
    """Three heads on one backbone."""
    compress: CompressStage = CompressStage()
    """INT8, distillation, pruning, and their side-by-side report."""
    serve: ServeStage = ServeStage()
    """Serving to simulated users."""
    improve: ImproveStage = ImproveStage()
    """Review of the worst answers and EWC training on the corrections."""
    abtest: AbTestStage = AbTestStage()
    """The old and the improved model A/B-tested through the server."""
