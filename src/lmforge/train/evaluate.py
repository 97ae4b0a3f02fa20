"""Validation perplexity, reading segments in order so the recurrence memory is used as in training."""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from lmforge.model import Transformer
from lmforge.tokenizer import SegmentBatches
from lmforge.train.objectives import Objective, count_targets, summed_loss

EVAL_DRAW_OFFSET = 10**9  # masks drawn for evaluation never coincide with training draws


@torch.no_grad()
def evaluate(model: Transformer, batches: SegmentBatches, objective: Objective, max_segments: int = 0,
             bf16: bool = False) -> dict[str, float]:
    """Mean loss per target token and its perplexity over the first `max_segments` (0 = all)."""
    was_training = model.training
    model.eval()
    total_loss, total_targets, mems = 0.0, 0, None
    n = batches.n_segments if max_segments <= 0 else min(max_segments, batches.n_segments)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    for i in range(n):
        x, y = batches.batch(i)
        inputs, labels = objective.prepare(x, y, EVAL_DRAW_OFFSET + i)
        with autocast:
            out = model(inputs, mems, causal=objective.causal)
        mems = out.mems
        total_loss += float(summed_loss(out.logits, labels))
        total_targets += count_targets(labels)
    model.train(was_training)
    loss = total_loss / max(total_targets, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": float(total_targets)}
