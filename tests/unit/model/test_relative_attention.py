"""The vectorised Transformer-XL attention (rel-shift) against the paper's formula, looped."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.model import ModelConfig
from lmforge.model.positions import RelativeAttention
from lmforge.model.xl import attention_mask


def sinusoid_at(distance: int, dim: int) -> torch.Tensor:
    """R_d written out: [sin(d·f_0), ..., sin(d·f_{dim/2-1}), cos(d·f_0), ...], f_i = 10000^(-2i/dim)."""
    freqs = [10000.0 ** (-2 * i / dim) for i in range(dim // 2)]
    return torch.tensor([math.sin(distance * f) for f in freqs] + [math.cos(distance * f) for f in freqs],
                        dtype=torch.float64)


def reference(core: RelativeAttention, q, k, v, mask) -> torch.Tensor:
    """score(i, j) = (q_i + u)·k_j + (q_i + v)·W_r R_{i-j}, one query-key pair at a time."""
    batch, heads, t, dh = q.shape
    klen = k.size(2)
    mlen = klen - t
    u, v_bias = core.u.view(heads, dh), core.v.view(heads, dh)
    out = torch.zeros_like(q)
    for b in range(batch):
        for h in range(heads):
            for i in range(t):
                scores = torch.full((klen,), float("-inf"), dtype=torch.float64)
                for j in range(klen):
                    if mask is not None and not mask[min(b, mask.size(0) - 1), 0, i, j]:
                        continue
                    r = (core.r_proj.weight @ sinusoid_at(mlen + i - j, heads * dh)).view(heads, dh)[h]
                    content = (q[b, h, i] + u[h]) @ k[b, h, j]
                    position = (q[b, h, i] + v_bias[h]) @ r
                    scores[j] = (content + position) / math.sqrt(dh)
                out[b, h, i] = scores.softmax(dim=0) @ v[b, h]
    return out


@pytest.mark.parametrize(("causal", "padded"), [(True, False), (False, False), (False, True), (True, True)])
def test_relative_attention_matches_looped_formula(causal, padded):
    torch.manual_seed(0)
    batch, heads, t, mlen, dh = 2, 4, 5, 3, 6
    core = RelativeAttention(ModelConfig(d_model=heads * dh, n_heads=heads)).double()
    with torch.no_grad():
        core.u.normal_()
        core.v.normal_()
        core.r_proj.weight.normal_(std=0.3)
    q = torch.randn(batch, heads, t, dh, dtype=torch.float64)
    k, v = (torch.randn(batch, heads, mlen + t, dh, dtype=torch.float64) for _ in range(2))
    padding = torch.tensor([[True] * t, [False, True, True, False, True]]) if padded else None
    mask = attention_mask(t, mlen, causal, padding, q.device)

    got = core(q, k, v, mask, causal=causal, dropout_p=0.0)
    torch.testing.assert_close(got, reference(core, q, k, v, mask), rtol=1e-10, atol=1e-10)
