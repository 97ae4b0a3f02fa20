"""Settings of `lmforge prune`: what to remove, how much, and the L1-regularised fine-tuning before it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from lmforge.train.config import OptimSettings

PruneMode = Literal["unstructured", "heads", "ffn"]


class PruneConfig(OptimSettings):
    """`lmforge prune MODEL --sparsity S --mode M`: the optimisation settings are the L1 fine-tuning's."""

    model: Path
    """Source model folder (pretrained LM or fine-tuned task model)."""
    mode: PruneMode
    """unstructured: global magnitude pruning of the block matrices (zeros, same shapes); heads:
    remove whole attention heads; ffn: remove MLP neurons (both shrink the matrices)."""
    sparsity: float = Field(gt=0, lt=1)
    """Share to remove: of the block matrices' weights (unstructured), of all heads, or of all MLP
    neurons. Structured modes keep at least one head / neuron in every layer."""
    head: str | None = None
    """Head whose task the model is pruned for; default the folder's only task head, else its LM."""
    data: Path | None = None
    """Training data of that task: a packed token folder (LM) or a task file (classify, ner, embed);
    default the data the source folder's manifest records."""
    l1: float = Field(1e-4, ge=0)
    """Strength lambda of the L1 penalty lambda * sum |w| over the weights being pruned; 0 = none."""
    importance_batches: int = Field(8, gt=0)
    """Training batches over which structured modes measure each head's / neuron's importance."""
    eval_segments: int = Field(8, gt=0)
    """LM only: validation batches per evaluation (read in order, with memory)."""
    out: Path | None = None
    """Output model folder; default `<model>-<mode><percent>` beside the source folder."""
    steps: int = Field(100, ge=0)
    """L1 fine-tuning steps before pruning; 0 prunes the source weights as they are."""
    batch_size: int = Field(32, gt=1)
    """Rows (examples, or segment streams for an LM) per step."""
    lr: float = Field(1e-4, gt=0)
    """Peak rate: a fine-tune of an already trained model."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW decay; off, since the L1 penalty is the regulariser here."""

    @property
    def output(self) -> Path:
        return self.out or self.model.parent / f"{self.model.name}-{self.mode}{round(self.sparsity * 100)}"
