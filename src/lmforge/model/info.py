"""Size, memory and compute of a config, without allocating it (`lmforge model info PRESET`).

The model is built on the meta device, so even xl-1536 costs no memory; parameter counts come
from the real module tree rather than a formula that could drift from it.
"""

from __future__ import annotations

from typing import Any

import torch

from lmforge.model.config import ModelConfig
from lmforge.model.xl import Transformer

_FP32, _BF16 = 4, 2


def _meta_model(config: ModelConfig) -> Transformer:
    with torch.device("meta"):
        return Transformer(config)


def _position_parameters(model: Transformer) -> int:
    """Parameters that only the position encoding has (xl: W_r, u, v; absolute: the table)."""
    return sum(p.numel() for name, p in model.named_parameters() if ".core." in name or "pos_emb" in name)


def flops_per_token(config: ModelConfig) -> float:
    """Training FLOPs (forward + backward) per segment token, for MFU = tokens/s · this / peak.

    With N the non-embedding parameters applied per token (all but W_r), V·D the tied LM head,
    T = seq_len, M = mem_len, K = T + M keys, L layers, D = d_model, A_l = the attention width of
    layer l (heads_at(l) · head_dim: D unless heads were pruned):

        6·(N + V·D)                       every weight: 2 forward + 4 backward FLOPs per token
      + Σ_l 12·K·A_l                      scores q·k and the value mix, fwd + bwd
      + Σ_l 12·(M/T)·D·A_l                W_k, W_v over the memory rows (recomputed each segment)
      + Σ_l [6·K·A_l + 4·(K/T)·D·A_l]     xl only: position scores, and W_r over K distances
                                          (its backward is a weight gradient only: R is fixed)

    Masked (future) scores are counted because the kernels compute them. A causal segment is
    assumed; bidirectional xl scores T-1 more distances.
    """
    model = _meta_model(config)
    d, t, m, k = config.d_model, config.seq_len, config.mem_len, config.seq_len + config.mem_len
    widths = [config.heads_at(layer) * config.head_dim for layer in range(config.n_layers)]
    r_proj = sum(d * a for a in widths) if config.position == "xl" else 0
    dense = 6 * (model.num_parameters(exclude_embeddings=True) - r_proj + config.vocab_size * d)
    per_width = 12 * k + 12 * (m / t) * d
    if config.position == "xl":
        per_width += 6 * k + 4 * (k / t) * d
    return float(dense + sum(widths) * per_width)


def activation_bytes(config: ModelConfig) -> int:
    """Rough fp32 bytes kept for backward by one training sequence (segment after full memory).

    Per layer: layer input and its LayerNorm over K rows, k and v over K rows, q, the attention
    output, the MLP's LayerNorm in/out and both d_ff-wide tensors, plus the H·T·K score
    matrices (scores and probabilities; xl also keeps its position scores). After the last
    layer: the final norm and two V-wide tensors per token (logits, log-probabilities).
    Dropout masks, temporaries and allocator slack are not counted.
    """
    d, t, k, h = config.d_model, config.seq_len, config.context_len, config.n_heads
    score_mats = 3 if config.position == "xl" else 2
    per_layer = 4 * k * d + 4 * t * d + 2 * t * config.d_ff + score_mats * h * t * k
    head = t * d + 2 * t * config.vocab_size
    return _FP32 * (config.n_layers * per_layer + head)


def describe(config: ModelConfig, batch_size: int = 1) -> dict[str, Any]:
    """Parameters, memory and FLOPs of `config`; memory figures in bytes."""
    model = _meta_model(config)
    total = model.num_parameters()
    non_embedding = model.num_parameters(exclude_embeddings=True)
    return {
        "preset": config.preset,
        "position": config.position,
        "parameters": total,
        "non_embedding_parameters": non_embedding,
        "embedding_parameters": total - non_embedding,
        "position_parameters": _position_parameters(model),
        "parameter_bytes_fp32": _FP32 * total,
        "parameter_bytes_bf16": _BF16 * total,
        # fp32 weights + gradients + AdamW's two moments.
        "training_state_bytes": 4 * _FP32 * total,
        "batch_size": batch_size,
        "activation_bytes": batch_size * activation_bytes(config),
        "flops_per_token": flops_per_token(config),
    }


def format_description(d: dict[str, Any]) -> str:
    """A small aligned two-column table of `describe`'s output, in human units."""
    rows = []
    for key, value in d.items():
        if "bytes" in key:
            text = f"{value / 2**30:.3f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"
        elif key.endswith("parameters"):
            text = f"{value / 1e6:.2f} M ({value:,})"
        elif key == "flops_per_token":
            text = f"{value / 1e6:.1f} MFLOP"
        else:
            text = str(value)
        rows.append((key.replace("_", " "), text))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {text}" for name, text in rows)
