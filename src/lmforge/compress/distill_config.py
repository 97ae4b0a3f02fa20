"""Settings of knowledge distillation (`lmforge distill`): the loss, the teacher, the student, the data.

The loss per target (a token of the LM, an example of a classifier) is

    w_kd * tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))
    + w_hidden * MSE(proj(student hidden_l), teacher hidden_m)   (mean over the mapped layer pairs)
    + w_hard * cross-entropy on the true labels

Hinton et al.'s tau^2 keeps the soft term's gradients comparable across temperatures; the hidden
term is TinyBERT's, with a learned projection where the widths differ. The optimisation settings
are the trainer's own (`OptimSettings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lmforge.config import Config
from lmforge.train.config import OptimSettings


class DistillLoss(Config):
    """The weights and temperature of the distillation loss, and which layers are matched."""

    temperature: float = Field(2.0, gt=0)
    """tau of the soft targets. 2 is DistilBERT's default, not a law: other recipes use 3-10
    (benchmarks/claim_c7_distillation.py measures 1, 2, 4 and 8)."""
    w_kd: float = Field(0.5, ge=0)
    """Weight of the soft-target term tau^2 * KL(teacher || student) (DistilBERT's alpha_ce 0.5)."""
    w_hidden: float = Field(1.0, ge=0)
    """Weight of the hidden-state MSE over the layer mapping (TinyBERT weighs it 1); 0 turns it off."""
    w_hard: float = Field(0.5, ge=0)
    """Weight of the hard-label loss: next-token cross-entropy (lm, DistilBERT's alpha_clm 0.5) or the
    head's cross-entropy (classify)."""
    layer_map: dict[int, int] | None = None
    """Student block -> teacher block whose output it is matched to (0-based, e.g. {0: 1, 1: 3});
    default: every student block, spread uniformly over the teacher's (TinyBERT's mapping)."""

    @model_validator(mode="after")
    def _some_weight(self) -> DistillLoss:
        if self.w_kd == self.w_hidden == self.w_hard == 0:
            raise ValueError("w_kd, w_hidden and w_hard are all 0: nothing to train on")
        return self

    @property
    def taught(self) -> bool:
        """Whether the teacher is needed at all (w_kd = w_hidden = 0 trains on the labels alone)."""
        return self.w_kd > 0 or self.w_hidden > 0


class DistillConfig(DistillLoss, OptimSettings):
    """`lmforge distill --teacher MODEL --student PRESET|MODEL`: a small model trained to match a teacher."""

    teacher: Path
    """Teacher model folder: a causal LM (task lm) or a classify fine-tune (task classify)."""
    student: str
    """A preset name (tiny, small, ...) to start from random weights, or a model folder to start from."""
    student_config: dict[str, Any] = {}
    """For a preset student: fields that override the preset (e.g. {d_model: 64, n_layers: 1}).
    vocab_size, seq_len and mem_len default to the teacher's; the vocabulary must be the teacher's."""
    task: Literal["lm", "classify"] = "lm"
    """lm: next-token distributions over the teacher's vocabulary; classify: the teacher's class head."""
    data: Path | None = None
    """lm: a packed token folder (default: the tokens the teacher was pretrained on, from its
    manifest); classify: the training file (TSV/CSV/JSONL text + label rows)."""
    dev: Path | None = None
    """classify: dev file for early stopping and the reported metrics (default: a held-out share)."""
    dev_fraction: float = Field(0.1, gt=0, lt=1)
    """classify: share of the training file held out as dev when no dev file is given."""
    head: str | None = None
    """classify: the teacher's head to distil (default: its only classify head)."""
    text_column: str | int | None = None
    """classify: text column (default: the one the teacher's head was trained with)."""
    label_column: str | int | None = None
    """classify: label column (default: the one the teacher's head was trained with)."""
    eval_segments: int = Field(20, ge=0)
    """lm: validation batches per evaluation; 0 means the whole validation split."""
    patience: int = Field(3, gt=0)
    """Stop after this many evaluations without a new best dev metric; the best weights are kept."""
    out: Path | None = None
    """Output model folder; default: the teacher's name + '-distilled', beside it."""

    @property
    def output(self) -> Path:
        return self.out or self.teacher.parent / f"{self.teacher.name}-distilled"
