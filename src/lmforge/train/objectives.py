"""The two pretraining objectives: (inputs, labels) makers, a summed loss, and the training objective.

Losses are returned as a *sum* over target tokens together with the target count, so that the
loop can divide by the number of targets in the whole optimizer batch. Averaging per
micro-batch instead would weight tokens unequally whenever micro-batches hold different
numbers of targets (always, for the masked objective): the classic gradient-accumulation bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.model import mask_tokens
from lmforge.tokenizer import SegmentBatches

IGNORE = -100


@dataclass(frozen=True)
class Objective:
    """How a batch of segments becomes model inputs and targets."""

    kind: str  # "causal" | "masked"
    mask_id: int = 0
    vocab_size: int = 0
    special_ids: tuple[int, ...] = ()
    mask_prob: float = 0.15
    seed: int = 0

    @property
    def causal(self) -> bool:
        return self.kind == "causal"

    def prepare(self, x: torch.Tensor, y: torch.Tensor, draw: int,
                rows: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels for a batch; `draw` numbers the batch draw.

        The masked objective draws a fresh mask for every draw (dynamic masking), seeded by
        (seed, draw) so that a resumed run draws exactly the masks the original would have.
        `rows` = (first row, rows in the global batch) when x is one data-parallel rank's slice:
        the mask is drawn for the whole global batch and sliced, so it does not depend on the layout.
        """
        if self.causal:
            return x, y
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + draw)
        if rows is None:
            return mask_tokens(x, mask_id=self.mask_id, vocab_size=self.vocab_size,
                               special_ids=self.special_ids, generator=generator, prob=self.mask_prob)
        first, total = rows
        whole = x.new_zeros(total, x.shape[1])
        whole[first:first + x.shape[0]] = x
        inputs, labels = mask_tokens(whole, mask_id=self.mask_id, vocab_size=self.vocab_size,
                                     special_ids=self.special_ids, generator=generator, prob=self.mask_prob)
        mine = slice(first, first + x.shape[0])
        return inputs[mine], labels[mine]


def count_targets(labels: torch.Tensor) -> int:
    return int((labels != IGNORE).sum())


def summed_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over target positions (labels == -100 are skipped).

    Computed in at least float32 (bf16 logits are upcast), never below the logits' own precision:
    float64 logits stay float64.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")


@dataclass
class LanguageModelling:
    """Pretraining as a training objective: batch `step` of the segment stream, masked or not.

    `rows` = (first row, rows in the global batch) of this rank's slice, so that masks are drawn
    for the global batch whatever the layout. The carry is the recurrence memory.
    """

    masking: Objective
    stream: SegmentBatches
    rows: tuple[int, int] | None = None

    @property
    def causal(self) -> bool:
        return self.masking.causal

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        x, y = self.stream.batch(step)
        return self.masking.prepare(x, y, step, self.rows)

    def count(self, batch: tuple[Tensor, ...]) -> int:
        return count_targets(batch[1])

    def loss(self, module: nn.Module, rows: tuple[Tensor, ...], carry: Any,
             teacher: Any = None) -> tuple[Tensor, Any]:
        inputs, labels = rows
        out = module(inputs, carry, causal=self.causal)
        return summed_loss(out.logits, labels), out.mems
