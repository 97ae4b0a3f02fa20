"""Fine-tuning objectives for the one trainer: one task head, or several balanced by GradNorm.

A head's loss is a mean over its targets (examples for classify and embed, first sub-tokens for
ner); the trainer wants sums, so each micro-batch's mean is multiplied back by its own target
count and the engine divides by the count of the whole batch: micro-batches with different
numbers of tagged words then weigh every word alike. SimCSE's in-batch negatives are the rows
of the micro-batch, so accumulation shrinks the negative pool (set micro_batch_size = batch_size
to keep it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from lmforge.model.gradnorm import FixedWeights, GradNorm
from lmforge.model.masking import IGNORE_INDEX
from lmforge.train.finetune_data import Encoded, batch, epoch_rows


@dataclass
class TaskObjective:
    """Head `head` (a `task` of classify/ner/embed) on `data`; this rank reads `local` of every
    `batch_size` rows, starting at `first`."""

    head: str
    task: str
    data: Encoded
    batch_size: int
    seed: int
    first: int = 0
    local: int | None = None
    causal = False

    def rows(self, step: int) -> list[int]:
        rows = epoch_rows(len(self.data.ids), self.batch_size, self.seed, step)
        return rows[self.first:self.first + (self.local or len(rows))]

    def batch(self, step: int) -> tuple[Tensor, Tensor, Tensor]:
        return batch(self.data, self.rows(step))

    def count(self, rows: tuple[Tensor, ...]) -> int:
        labels = rows[2]
        return int((labels != IGNORE_INDEX).sum()) if self.task == "ner" else labels.shape[0]

    def mean_loss(self, module: nn.Module, rows: tuple[Tensor, ...]) -> Tensor:
        idx, mask, labels = rows
        if self.task == "embed":  # unsupervised SimCSE: same rows, another dropout mask
            loss, _ = module(self.head, idx, mask, positive=idx, positive_mask=mask)
        else:
            loss, _ = module(self.head, idx, mask, labels=labels)
        return loss

    def loss(self, module: nn.Module, rows: tuple[Tensor, ...], carry: Any,
             teacher: Any = None) -> tuple[Tensor, None]:
        count = self.count(rows)
        if count == 0:  # a micro-batch without a tagged word: no loss, but keep the graph for DDP
            return sum(p.sum() * 0.0 for p in module.parameters() if p.requires_grad), None
        return self.mean_loss(module, rows) * count, None


@dataclass
class MultiTaskObjective:
    """Every step: one batch of each task; the loss is the balancer's weighted sum of the task means.

    A step is one unit (no accumulation): the weighted sum is the per-step loss GradNorm is
    defined on. Over data-parallel replicas each task's mean is over the whole batch: a rank's
    summed loss is divided by the task's global target count (`global_count`), its share of the
    weighted sum is scaled by the replica count (DDP averages gradients), and `sum_over_ranks`
    adds the shares' values and gradients for GradNorm. `measured` holds this step's task losses
    and their gradient norms at `shared`, for the balancer's step after the optimizer's.
    """

    tasks: list[TaskObjective]
    balancer: GradNorm | FixedWeights
    shared: nn.Parameter
    replicas: int = 1
    global_count: Callable[[int], int] = int
    """A rank's target count -> the count over every replica (identity in one process)."""
    sum_over_ranks: Callable[[Tensor], Tensor] | None = None
    """Adds a tensor over the replicas (None in one process)."""
    measured: tuple[Tensor, Tensor] | None = None
    causal = False

    def batch(self, step: int) -> tuple[Tensor, ...]:
        return tuple(t for task in self.tasks for t in task.batch(step))

    def count(self, rows: tuple[Tensor, ...]) -> int:
        return 1

    def split(self, rows: tuple[Tensor, ...]) -> list[tuple[Tensor, ...]]:
        return [rows[3 * i:3 * i + 3] for i in range(len(self.tasks))]

    def loss(self, module: nn.Module, rows: tuple[Tensor, ...], carry: Any,
             teacher: Any = None) -> tuple[Tensor, None]:
        losses = [task.loss(module, part, None)[0] / max(self.global_count(task.count(part)), 1)
                  for task, part in zip(self.tasks, self.split(rows), strict=True)]
        self.measured = self.balancer.measure(losses, self.shared, self.sum_over_ranks)
        return self.balancer.weighted_loss(losses) * self.replicas, None


class BalancerStep:
    """Step callback: the balancer's update from the step's measurements (whole-batch figures, the
    same on every rank, so every rank keeps the same weights); logs each task's loss and weight."""

    name = "balancer"

    def __init__(self, objective: MultiTaskObjective, names: list[str]):
        self.objective, self.names = objective, names

    def after_step(self, step: int, record: dict[str, Any], engine: Any) -> dict[str, float]:
        values, norms = self.objective.measured
        if norms.numel():
            self.objective.balancer.step(values, norms)
        weights = self.objective.balancer.weights
        return {**{f"loss/{name}": float(v) for name, v in zip(self.names, values, strict=True)},
                **{f"weight/{name}": w for name, w in zip(self.names, weights, strict=True)}}

    def state_dict(self) -> dict[str, Any]:
        return self.objective.balancer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.objective.balancer.load_state_dict(state)
