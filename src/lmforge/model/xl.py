"""The backbone: a pre-LN Transformer with Transformer-XL segment-level recurrence.

Each layer keeps its inputs from earlier segments as memory; a segment's keys and values are
computed over cat(memory, current), so a query at segment position i sees `mlen + i + 1` tokens
while gradients stay inside the current segment (memory is detached). The position encoding
(`config.position`) only changes how scores are formed, see `positions.py`.

Sequences whose memories differ in length can share a batch: left-pad the memories and pass a
[B, M+T] `padding_mask`. Relative and rotary scores depend only on query-key distances, which
left padding leaves unchanged; learned absolute positions are offset per row by the padding, so
every row computes what it would alone (up to float rounding).

Shapes: B batch, T segment length, M memory length, K = M + T keys, D width, H heads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.model.config import ModelConfig
from lmforge.model.positions import ATTENTION_CORES, AttentionCore, RelativeAttention


@dataclass
class ModelOutput:
    hidden: Tensor
    """[B, T, D] after the final LayerNorm: what task heads read."""
    logits: Tensor
    """[B, T, V] from the LM head, tied to the input embedding."""
    mems: list[Tensor]
    """Per layer, [B, <=mem_len, D], detached; empty when memory is off."""


class Attention(nn.Module):
    """Multi-head attention of the current segment over cat(memory, segment), with `n_heads` heads
    of width d_model/config.n_heads (fewer than config.n_heads after head pruning)."""

    def __init__(self, config: ModelConfig, n_heads: int):
        super().__init__()
        d, width = config.d_model, n_heads * config.head_dim
        self.head_dim = config.head_dim
        self.attn_dropout = config.attn_dropout
        self.wq, self.wk, self.wv = (nn.Linear(d, width) for _ in range(3))
        self.wo = nn.Linear(width, d)
        self.core: AttentionCore = ATTENTION_CORES[config.position](config, n_heads)

    def forward(self, h: Tensor, n_query: int, mask: Tensor | None, causal: bool) -> Tensor:
        """h: [B, K, D] normalised memory + segment; the last `n_query` rows are the queries."""
        q = self._split_heads(self.wq(h[:, h.size(1) - n_query :]))
        k, v = self._split_heads(self.wk(h)), self._split_heads(self.wv(h))
        dropout_p = self.attn_dropout if self.training else 0.0
        y = self.core(q, k, v, mask, causal=causal, dropout_p=dropout_p)
        return self.wo(y.transpose(1, 2).flatten(2))

    def _split_heads(self, x: Tensor) -> Tensor:
        # -1 heads, so a tensor-parallel shard that holds only some heads works unchanged.
        return x.view(x.size(0), x.size(1), -1, self.head_dim).transpose(1, 2)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, d_ff: int):
        super().__init__()
        self.w_in = nn.Linear(config.d_model, d_ff)
        self.w_out = nn.Linear(d_ff, config.d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_out(F.gelu(self.w_in(x)))


class Block(nn.Module):
    """Pre-LN block `layer`: x + Attn(LN(mem ‖ x)), then x + MLP(LN(x)), at the layer's widths."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attn = Attention(config, config.heads_at(layer))
        self.mlp_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.mlp = MLP(config, config.d_ff_at(layer))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mem: Tensor | None, mask: Tensor | None, causal: bool) -> Tensor:
        h = x if mem is None else torch.cat([mem, x], dim=1)
        x = x + self.drop(self.attn(self.attn_norm(h), x.size(1), mask, causal))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class Transformer(nn.Module):
    """Token embedding, `n_layers` blocks with recurrence memory, final LayerNorm, tied LM head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        # Learned absolute positions cover the longest reach: a full segment after a full memory.
        self.pos_emb = None
        if config.position == "absolute":
            self.pos_emb = nn.Embedding(config.context_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        # The LM head is its own module (so parallelism can shard it) sharing the embedding matrix.
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(2·n_layers).

        Public so a model built on the meta device can be materialised (`to_empty`) and filled.
        """
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and name != "lm_head":  # tied: set as the embedding
                is_residual = name.endswith(("attn.wo", "mlp.w_out"))
                nn.init.normal_(module.weight, std=residual_std if is_residual else 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif isinstance(module, RelativeAttention):
                nn.init.zeros_(module.u)
                nn.init.zeros_(module.v)

    def forward(self, idx: Tensor, mems: list[Tensor] | None = None, *, causal: bool = True,
                padding_mask: Tensor | None = None, mem_len: int | None = None) -> ModelOutput:
        """Run one segment `idx` [B, T] after `mems` (from the previous call's output).

        `causal=False` lets every query see the whole segment (masked LM). `padding_mask` is True
        for real tokens and pads are never attended to: [B, T] covers the segment (memory counts
        as real), [B, M+T] the memory too (left-padded memories of different lengths; the
        returned memory keeps the padding in place). `mem_len` overrides `config.mem_len` for the
        returned memory (generation keeps more).
        """
        mems = mems or None
        if mems is not None and len(mems) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} memory tensors (one per layer), got {len(mems)}")
        t = idx.size(1)
        mlen = mems[0].size(1) if mems is not None else 0
        if padding_mask is not None and padding_mask.size(1) not in (t, mlen + t):
            raise ValueError(f"padding_mask covers {padding_mask.size(1)} positions; expected the "
                             f"segment ({t}) or memory + segment ({mlen + t})")
        mem_pads = None
        if padding_mask is not None and padding_mask.size(1) == mlen + t:
            mem_pads = (~padding_mask[:, :mlen].to(torch.bool)).sum(dim=1)
        x = self.embed(idx, mlen, mem_pads)
        mask = attention_mask(t, mlen, causal, padding_mask, idx.device)
        keep = self.config.mem_len if mem_len is None else mem_len
        x, new_mems = run_blocks(self.blocks, x, mems, mask, causal, keep)
        hidden = self.norm(x)
        return ModelOutput(hidden=hidden, logits=self.lm_head(hidden), mems=new_mems)

    def embed(self, idx: Tensor, mlen: int, mem_pads: Tensor | None = None) -> Tensor:
        """Token (+ learned absolute position) embeddings of a segment that follows `mlen` memory tokens.

        `mem_pads` [B] counts each row's padded memory positions: a row's segment then starts at
        position mlen - pads, where it would start without the padding.
        """
        t = idx.size(1)
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            if mlen + t > self.pos_emb.num_embeddings:
                raise ValueError(f"absolute positions reach {self.pos_emb.num_embeddings} tokens "
                                 f"(seq_len + mem_len); got {mlen} memory + {t} segment tokens")
            positions = torch.arange(mlen, mlen + t, device=idx.device)
            if mem_pads is not None:
                positions = positions - mem_pads[:, None]  # [B, T]
            x = x + self.pos_emb(positions)
        return self.drop(x)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameter count; `exclude_embeddings` drops the token and absolute-position tables.

        The LM head is tied to the token embedding, so it is never counted twice.
        """
        tables = ("tok_emb.", "pos_emb.")
        return sum(p.numel() for name, p in self.named_parameters()
                   if not (exclude_embeddings and name.startswith(tables)))


def run_blocks(blocks: Iterable[Block], x: Tensor, mems: list[Tensor] | None, mask: Tensor | None,
               causal: bool, keep: int) -> tuple[Tensor, list[Tensor]]:
    """Run `blocks` in order over x; returns the output and each block's next memory (if keep > 0).

    A function of the blocks alone, so a pipeline stage holding some of them runs them the same way.
    """
    new_mems = []
    for i, block in enumerate(blocks):
        mem = mems[i] if mems is not None else None
        if keep > 0:
            new_mems.append(_extend_memory(mem, x, keep))
        x = block(x, mem, mask, causal)
    return x, new_mems


def attention_mask(t: int, mlen: int, causal: bool, padding_mask: Tensor | None,
                   device: torch.device) -> Tensor | None:
    """Boolean [B or 1, 1, T, M+T] mask, True where query i may attend to key j; None = all.

    `padding_mask` is [B, T] (memory all real) or [B, M+T]. Query i sits at key index mlen+i.
    Every query may see itself, so a pad query never has an empty row (that would make NaNs, which
    leak through 0-weighted values into real tokens).
    """
    if not causal and padding_mask is None:
        return None
    query = torch.arange(mlen, mlen + t, device=device)[:, None]
    key = torch.arange(mlen + t, device=device)[None, :]
    allowed = key <= query if causal else torch.ones(t, mlen + t, dtype=torch.bool, device=device)
    if padding_mask is not None:
        real = padding_mask.to(torch.bool)
        if real.size(1) == t:
            real = F.pad(real, (mlen, 0), value=True)  # memory given as all real
        allowed = (allowed & real[:, None, :]) | (key == query)
    return allowed.view(-1, 1, t, mlen + t)


def _extend_memory(mem: Tensor | None, x: Tensor, keep: int) -> Tensor:
    """The last `keep` inputs of this layer, gradient stopped: the next segment's memory."""
    full = x if mem is None else torch.cat([mem, x], dim=1)
    return full[:, -keep:].detach()
