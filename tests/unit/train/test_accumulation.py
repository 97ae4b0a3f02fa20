"""Gradient accumulation against an independent reference: one cross-entropy mean, one backward.

The reference runs the same forward passes (same micro-batches, same order, same memory, same
global RNG so dropout draws the same masks), concatenates the logits and takes
`torch.nn.functional.cross_entropy(..., ignore_index=-100)`, the *mean* over every target of
the whole batch, with a single backward. `Engine.forward_backward` on the pretraining objective
(per-micro-batch summed losses, each scaled by the batch's target count) must give the same gradients, mean
loss and next memory, in float64, with dropout on, over two steps that carry the memory.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.model import ModelConfig, Transformer
from lmforge.parallel import Layout
from lmforge.train.engine import Engine
from lmforge.train.objectives import LanguageModelling, Objective, summed_loss

VOCAB, BATCH, T = 50, 8, 8
SPECIALS = tuple(range(7))


def make_model() -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=2, d_ff=32, seq_len=T, mem_len=T,
                         dropout=0.1)
    return Transformer(config).double().train()


def reference_step(model: Transformer, inputs: torch.Tensor, labels: torch.Tensor, micro: int, mems,
                   causal: bool):
    """Mean cross-entropy of the whole batch by torch.nn.functional, one backward."""
    logits, new_mems = [], []
    for k, start in enumerate(range(0, BATCH, micro)):
        out = model(inputs[start:start + micro], mems[k] if mems else None, causal=causal)
        logits.append(out.logits)
        new_mems.append(out.mems)
    loss = F.cross_entropy(torch.cat(logits).flatten(0, 1), labels.flatten(), ignore_index=-100)
    loss.backward()
    return float(loss.detach()), new_mems


class Draws:
    """A segment stream stand-in: batch `step` is draw `step` of the test data."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[step], self.y[step]


def engine_step(model: Transformer, objective: Objective, x, y, micro: int, mems, draw: int):
    """One step's gradients through the trainer's engine; (mean loss, targets, new memory)."""
    engine = Engine(model, Layout.single(), BATCH, micro, bf16=False)
    lm = LanguageModelling(objective, Draws(x, y))
    batch = lm.batch(draw)
    loss, new_mems, _ = engine.forward_backward(lm, batch, mems)
    return loss, lm.count(batch), new_mems


def data(kind: str):
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(len(SPECIALS), VOCAB, (2, BATCH, T), generator=generator)
    y = torch.randint(len(SPECIALS), VOCAB, (2, BATCH, T), generator=generator)
    # Causal rows with some ignored targets, unevenly spread: micro-batches hold different counts.
    y[torch.rand(y.shape, generator=generator) < torch.linspace(0.0, 0.6, BATCH)[:, None]] = -100
    objective = Objective(kind=kind, mask_id=4, vocab_size=VOCAB, special_ids=SPECIALS, seed=3, mask_prob=0.3)
    return x, y, objective


@pytest.mark.parametrize("kind", ["causal", "masked"])
@pytest.mark.parametrize("micro", [8, 4, 3, 1])
def test_accumulated_gradients_equal_whole_batch_mean_cross_entropy(kind, micro):
    x, y, objective = data(kind)
    model = make_model()
    mems_ref = mems_acc = None
    for draw in range(2):  # the second step runs on the memory the first one left
        inputs, labels = objective.prepare(x[draw], y[draw], draw)
        counts = [int((labels[s:s + micro] != -100).sum()) for s in range(0, BATCH, micro)]
        assert len(set(counts)) > 1 or micro == BATCH  # uneven targets per micro-batch

        model.zero_grad(set_to_none=True)
        torch.manual_seed(100 + draw)
        ref_loss, mems_ref = reference_step(model, inputs, labels, micro, mems_ref, objective.causal)
        reference = {name: p.grad.clone() for name, p in model.named_parameters()}
        if draw == 0:  # dropout is on: other masks give other gradients, so the masks had to match
            model.zero_grad(set_to_none=True)
            torch.manual_seed(999)
            reference_step(model, inputs, labels, micro, None, objective.causal)
            assert not torch.allclose(model.tok_emb.weight.grad, reference["tok_emb.weight"], rtol=1e-3)

        model.zero_grad(set_to_none=True)
        torch.manual_seed(100 + draw)
        loss, targets, mems_acc = engine_step(model, objective, x, y, micro, mems_acc, draw)
        assert targets == int((labels != -100).sum())
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, reference[name], rtol=1e-9, atol=1e-12, msg=name)
        for ref_layers, acc_layers in zip(mems_ref, mems_acc, strict=True):
            for a, b in zip(ref_layers, acc_layers, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_summed_loss_is_cross_entropy_summed_in_at_least_float32(dtype):
    """bf16 logits (autocast) are summed in float32, float64 stays float64; -100 is not a target."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=generator, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, 11, (3, 5), generator=generator)
    labels[0, :2] = -100
    wide = logits.to(torch.float64)
    expected = sum(-torch.log_softmax(wide[b, t], -1)[labels[b, t]] for b in range(3) for t in range(5)
                   if labels[b, t] != -100)
    got = summed_loss(logits, labels)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert float(got) == pytest.approx(float(expected), rel=1e-12 if dtype == torch.float64 else 1e-6)
