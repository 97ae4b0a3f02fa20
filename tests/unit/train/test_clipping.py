"""Gradient clipping by the global norm, against torch's own `clip_grad_norm_` as the reference.

The loop logs the norm before clipping and clips in place; AdamW is nearly blind to a constant
gradient scale, so a wrong norm or coefficient hardly moves a loss curve. These checks compare
the returned norm with the float64 norm of every gradient, and the clipped gradients with what
`torch.nn.utils.clip_grad_norm_` makes of a copy of the same gradients.
"""

from __future__ import annotations

import pytest
import torch

from lmforge.model import ModelConfig, Transformer
from lmforge.parallel import Layout
from lmforge.train.engine import Engine

NORM = 2.0
"""The gradients' global norm, so that thresholds on both sides of it and of 1 are tested."""


def model_with_gradients(frozen: str | None = None) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=40, d_model=16, n_layers=2, n_heads=2, d_ff=32, seq_len=8,
                                    mem_len=8)).double()
    for name, param in model.named_parameters():
        if name == frozen:
            param.requires_grad_(False)  # a frozen parameter has no gradient and is skipped
        else:
            param.grad = torch.randn_like(param)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    scale = NORM / torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    for grad in grads:
        grad.mul_(scale)
    return model


def expected(model: Transformer, max_norm: float) -> tuple[float, list[torch.Tensor]]:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
    copies = [torch.nn.Parameter(g.clone()) for g in grads]
    for copy, grad in zip(copies, grads, strict=True):
        copy.grad = grad.clone()
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(copies, max_norm)
    return norm, [c.grad for c in copies]


@pytest.mark.parametrize("frozen", [None, "blocks.0.attn.core.u"])
@pytest.mark.parametrize("max_norm", [0.0, 0.5, 1.5, 3.0])  # off, clipped below and above 1, not reached
def test_clip_returns_the_global_norm_and_clips_like_torch(max_norm, frozen):
    model = model_with_gradients(frozen)
    norm, want = expected(model, max_norm)
    engine = Engine(model, Layout.single(), local_batch=1, micro_batch=1, bf16=False)
    assert engine.clip_gradients(max_norm) == pytest.approx(norm, rel=1e-12)
    got = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    after = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in got])))
    assert after == pytest.approx(min(norm, max_norm) if max_norm > 0 else norm, rel=1e-5)
