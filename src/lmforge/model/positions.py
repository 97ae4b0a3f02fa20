"""Position encodings: the part of attention that differs between the three variants.

Every variant scores queries at absolute indices `mlen .. mlen+T-1` against keys `0 .. mlen+T-1`
(memory first), so segment-level recurrence works for all three.

- ``xl`` (default, Dai et al. 2019): score(i, j) = (q_i + u)·k_j + (q_i + v)·W_r R_{i-j}, with R
  fixed sinusoids of the relative distance. Extra parameters per layer: W_r (d_model²) and the
  biases u, v (2·d_model). u/v are per layer rather than shared as in the paper, so that every
  block is self-contained for pipeline stages and sharding (the reference code's `untie_r`).
- ``absolute``: a learned table of `seq_len + mem_len` position vectors added to the token
  embeddings (GPT-2/BERT; the paper's Al-Rfou et al. baseline). Learned rather than fixed
  sinusoids because fixed ones (amplitude 1) would drown 0.02-scale token embeddings, and the
  table narrows the parameter gap to xl. Memory states keep the positions they were computed
  at, the "temporal confusion" that motivated relative encodings.
- ``rotary`` (Su et al. 2021): q and k rotated by their absolute index, so scores depend only
  on i - j. No parameters.

Parameter budget: all three share d_model, layers, heads and d_ff. Relative to rotary, xl adds
n_layers·(d_model² + 2·d_model) (about 8% of the non-embedding parameters at every preset) and
absolute adds (seq_len + mem_len)·d_model; `info.describe` reports the exact figure.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.model.config import ModelConfig


def sinusoid(positions: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """[n] positions -> [n, dim] embeddings (sin | cos), as in Vaswani et al. and Dai et al."""
    angles = _angles(positions, dim, dtype)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)


def rotate(x: Tensor, positions: Tensor) -> Tensor:
    """Rotary embedding of x [..., n, d] at positions [n], half-split (GPT-NeoX) layout."""
    angles = _angles(positions, x.size(-1), x.dtype)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _angles(positions: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    # Angles in at least fp32: in bf16 positions above 256 are no longer exact integers.
    work = torch.promote_types(dtype, torch.float32)
    inv_freq = 10000.0 ** -(torch.arange(0, dim, 2, device=positions.device, dtype=work) / dim)
    return positions.to(work)[:, None] * inv_freq


def rel_shift(scores: Tensor, klen: int) -> Tensor:
    """Re-index [..., T, R] scores from relative-distance columns to key columns.

    Column m of the input holds distance R-1-m (distances descend). Key j of query i is at
    distance (klen - T) + i - j, so the output is out[i, j] = scores[i, j + T-1-i]. The trick of
    Dai et al.: prepend a zero column and reread the buffer as [R+1, T]; dropping the first row
    moves every row i left by T-1-i. One copy, no gather.
    """
    *batch, t, r = scores.shape
    padded = F.pad(scores, (1, 0)).view(*batch, r + 1, t)
    return padded[..., 1:, :].view(*batch, t, r)[..., :klen]


class AttentionCore(Protocol):
    """Scores and mixes heads: q [B, H, T, dh], k and v [B, H, K, dh] with the memory first.

    `mask` [B or 1, 1, T, K] is True where a query may see a key (None: everything);
    `causal` says whether any query may see later keys, which sets the distances xl needs.
    """

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, causal: bool,
                 dropout_p: float) -> Tensor: ...


class RelativeAttention(nn.Module):
    """Transformer-XL attention: content terms (a)+(c) and position terms (b)+(d) of Dai et al.

    Explicit score matrices: the position term has no fused-kernel path. W_r's output rows and
    u, v are per head, so a layer with `n_heads` heads (after head pruning) holds only theirs.
    """

    def __init__(self, config: ModelConfig, n_heads: int | None = None):
        super().__init__()
        self.head_dim = config.head_dim
        width = (n_heads or config.n_heads) * config.head_dim
        self.r_proj = nn.Linear(config.d_model, width, bias=False)
        self.u = nn.Parameter(torch.zeros(width))
        self.v = nn.Parameter(torch.zeros(width))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, causal: bool,
                dropout_p: float) -> Tensor:
        t, klen = q.size(-2), k.size(-2)
        # Distances klen-1 .. 0 suffice when no query looks ahead; otherwise down to -(T-1).
        lowest = 0 if causal else 1 - t
        distances = torch.arange(klen - 1, lowest - 1, -1, device=q.device)
        r = self.r_proj(sinusoid(distances, self.r_proj.in_features, self.u.dtype))
        r = r.view(r.size(0), -1, self.head_dim).permute(1, 2, 0)  # [H, dh, R]

        scale = self.head_dim**-0.5
        u = self.u.view(-1, 1, self.head_dim)
        v_bias = self.v.view(-1, 1, self.head_dim)
        content = ((q + u) * scale) @ k.transpose(-1, -2)  # (a) + (c)
        position = rel_shift(((q + v_bias) * scale) @ r, klen)  # (b) + (d)
        scores = content.add_(position)  # in place: one [B, H, T, K] buffer fewer
        if mask is not None:
            scores.masked_fill_(~mask, float("-inf"))
        probs = F.dropout(scores.softmax(dim=-1), dropout_p, training=dropout_p > 0)
        return probs @ v


class RotaryAttention(nn.Module):
    """Rotates q and k by their absolute index, then fused scaled-dot-product attention."""

    def __init__(self, config: ModelConfig, n_heads: int | None = None):  # no parameters, any heads
        super().__init__()

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, causal: bool,
                dropout_p: float) -> Tensor:
        t, klen = q.size(-2), k.size(-2)
        positions = torch.arange(klen, device=q.device)
        q, k = rotate(q, positions[klen - t :]), rotate(k, positions)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class PlainAttention(nn.Module):
    """Position-free attention, for absolute positions that are already in the input."""

    def __init__(self, config: ModelConfig, n_heads: int | None = None):  # no parameters, any heads
        super().__init__()

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, causal: bool,
                dropout_p: float) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


ATTENTION_CORES: dict[str, type[nn.Module]] = {
    "xl": RelativeAttention,
    "absolute": PlainAttention,
    "rotary": RotaryAttention,
}
