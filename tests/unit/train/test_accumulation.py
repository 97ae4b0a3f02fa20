from __future__ import annotations

import pytest
import torch

from lmforge.model import ModelConfig, Transformer
from lmforge.train.loop import accumulate_gradients
from lmforge.train.objectives import Objective

VOCAB = 50


def grads_after(objective: Objective, micro: int, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=2, d_ff=32, seq_len=8, mem_len=8,
                         dropout=0.0)
    model = Transformer(config).double()
    mems = None
    for draw in range(2):  # two steps, so the second one runs on carried recurrence memory
        model.zero_grad()
        _, _, mems = accumulate_gradients(model, objective, x[draw], y[draw], micro, mems, draw)
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_one_batch_equals_k_micro_batches(kind):
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(7, VOCAB, (2, 8, 8), generator=generator)
    y = torch.randint(7, VOCAB, (2, 8, 8), generator=generator)
    objective = Objective(kind=kind, mask_id=4, vocab_size=VOCAB, special_ids=tuple(range(7)), seed=3)
    whole = grads_after(objective, 8, x, y)
    for micro in (4, 2, 1):
        split = grads_after(objective, micro, x, y)
        for a, b in zip(whole, split, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
