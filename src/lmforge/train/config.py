"""Settings of the pretraining stage (`lmforge pretrain CONFIG`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lmforge.config import Config
from lmforge.device import DEVICE_PATTERN
from lmforge.model.config import ModelConfig
from lmforge.parallel.config import ParallelSettings


class DataSettings(Config):
    tokens: Path
    """Packed token folder written by `lmforge tokenizer pack` (holds index.json)."""
    tokenizer: Path
    """Tokenizer folder (or its tokenizer.json) the tokens were packed with."""


class OptimSettings(Config):
    """How every training run optimises: pretraining, fine-tuning and multi-task alike."""

    steps: int = Field(200, gt=0)
    """Optimizer steps to run in total."""
    batch_size: int = Field(16, gt=0)
    """Rows (segment streams, or examples) per optimizer step."""
    micro_batch_size: int | None = Field(None, gt=0)
    """Rows per forward/backward; gradients accumulate over batch_size/micro_batch_size."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate, reached at the end of warm-up."""
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of the steps spent in linear warm-up (the guide's 10%), then cosine decay."""
    min_lr_ratio: float = Field(0.1, gt=0, le=1)
    """Cosine decays to lr * min_lr_ratio (the guide's peak/10)."""
    weight_decay: float = Field(0.1, ge=0)
    """AdamW decoupled weight decay, applied to matrices only (not biases, norms, embeddings' u/v)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW moment coefficients."""
    grad_clip: float = Field(1.0, ge=0)
    """Clip the global gradient norm to this value; 0 disables clipping."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 runs forward/backward under autocast on the run's device; weights and optimizer stay fp32."""
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    """auto (CUDA when present, else CPU), cpu, cuda or cuda:N; each worker of a multi-process run
    takes its own GPU."""
    compile: bool = False
    """torch.compile the model before training (first steps are slower while it compiles)."""
    seed: int = 0
    """Seeds initialisation, dropout, masking and the order of examples."""
    eval_every: int = Field(50, gt=0)
    """Evaluate every N steps (and at the end)."""
    checkpoint_every: int = Field(100, gt=0)
    """Write a resumable checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = Field(2, gt=0)
    """How many newest checkpoints to keep on disk."""
    log_every: int = Field(10, gt=0)
    """Write a metrics line every N steps."""

    @model_validator(mode="after")
    def _micro_batch_divides(self) -> OptimSettings:
        micro = self.micro_batch_size or self.batch_size
        if self.batch_size % micro:
            raise ValueError(
                f"micro_batch_size={micro} must divide batch_size={self.batch_size}"
            )
        return self


class TrainSettings(OptimSettings):
    """Pretraining: the shared optimisation settings plus the language-modelling ones."""

    objective: Literal["causal", "masked"] = "causal"
    """causal: next-token LM with recurrence memory; masked: dynamic 15% 80/10/10 masked LM."""
    mask_prob: float = Field(0.15, gt=0, lt=1)
    """Share of non-special tokens chosen as targets for the masked objective."""
    plateau_patience: int = Field(3, gt=0)
    """Evaluations without a new best validation loss before the rate is cut."""
    plateau_factor: float = Field(0.1, gt=0, le=1)
    """Multiplier applied to the rate on a validation plateau (the guide's x0.1)."""
    eval_segments: int = Field(20, ge=0)
    """Validation batches per evaluation; 0 means the whole validation split."""
    peak_gflops: float | None = Field(None, gt=0)
    """Machine peak for MFU; measured with a short matmul probe when not given."""


class PretrainConfig(Config):
    name: str = "pretrain"
    """Run name: checkpoints go to OUT/checkpoints/NAME, the model to OUT/models/NAME."""
    out: Path = Path("runs/default")
    """Folder holding checkpoints/ and models/ (a run folder of `lmforge run`)."""
    model: ModelConfig = ModelConfig(preset="tiny")
    """Architecture; vocab_size is taken from the tokenizer."""
    data: DataSettings
    """Where the packed tokens and the tokenizer are."""
    train: TrainSettings = TrainSettings()
    """Optimisation, schedule, evaluation and checkpointing."""
    parallel: ParallelSettings = ParallelSettings()
    """How ranks split the work when launched with `--nproc N` (or torchrun); ignored in one process."""
