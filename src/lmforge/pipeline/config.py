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
    dev: int = Field(gt=1)
    test: int = Field(gt=1)


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
    batch_size: int = Field(16, gt=1)
    lr: float = Field(1e-3, gt=0)
    eval_every: int = Field(30, gt=0)
    label_budgets: list[int | None] = [64, None]
    """Training examples per comparison (None: the whole train split, which is also the model every
    later stage uses); pretrained and scratch are fine-tuned at each budget."""


class MultitaskStage(Config):
    """One backbone, three heads (classify, NER, embeddings), balanced by GradNorm."""

    steps: int = Field(100, gt=0)
    batch_size: int = Field(16, gt=1)
    lr: float = Field(1e-3, gt=0)
    eval_every: int = Field(25, gt=0)
    balancer: Literal["gradnorm", "equal"] = "gradnorm"


class CompressStage(Config):
    """The classifier compressed three ways, then measured side by side."""

    int8_method: Literal["dynamic", "static", "weight-only", "qat"] = "dynamic"
    """The INT8 method (issue 11 measured dynamic as the best on CPU: fastest at equal quality)."""
    student_layers: int = Field(1, gt=0)
    """Layers of the distilled student (the teacher's width, fewer layers)."""
    distill_steps: int = Field(150, gt=0)
    prune_mode: Literal["unstructured", "heads", "ffn"] = "ffn"
    prune_sparsity: float = Field(0.5, gt=0, lt=1)
    prune_steps: int = Field(30, ge=0)
    """L1 fine-tuning steps before pruning."""
    report_rounds: int = Field(3, gt=0)
    """Interleaved timing rounds of the compression report."""


class ServeStage(Config):
    """Serving the classifier briefly on 127.0.0.1 to simulated users whose feedback is the truth."""

    requests: int = Field(600, gt=0)
    """Requests of the traffic, drawn from the pool of classification rows no stage trained on."""
    concurrency: int = Field(8, gt=0)
    """Clients sending at once."""
    feedback_share: float = Field(0.3, ge=0, le=1)
    """Share of answers the users rate (+1 right, -1 wrong with the right label)."""
    runtime: Literal["eager", "int8", "onnx", "onnx-int8"] = "eager"
    redis_url: str | None = None
    """Result cache in Redis (default: in-process)."""
    records_url: str | None = None
    """Records database URL (default: a SQLite file in the run folder)."""


class ImproveStage(Config):
    """Mining the worst answers, a simulated reviewer (the truth), and EWC training on the fixes."""

    mine_share: float = Field(0.01, gt=0, le=1)
    """Share of the served requests queued for review, the worst first."""
    ewc_lambda: float = Field(1e5, ge=0)
    steps: int = Field(30, gt=0)
    batch_size: int = Field(8, gt=1)
    lr: float = Field(1e-4, gt=0)
    fisher_samples: int = Field(256, gt=0)


class AbTestStage(Config):
    """The old and the improved classifier A/B-tested through the server on unseen test rows."""

    users: int = Field(300, gt=1)
    requests_per_user: int = Field(3, gt=0)
    alpha: float = Field(0.05, gt=0, lt=1)
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
    finetune: FinetuneStage = FinetuneStage()
    multitask: MultitaskStage = MultitaskStage()
    compress: CompressStage = CompressStage()
    serve: ServeStage = ServeStage()
    improve: ImproveStage = ImproveStage()
    abtest: AbTestStage = AbTestStage()
