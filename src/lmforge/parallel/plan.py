"""What each rank will hold before any worker starts: `lmforge parallel plan CONFIG --world N`.

The model is built on the meta device (no memory), and each parameter is assigned the share a
rank keeps under the layout, using the same rules the parallel code applies:
- pipeline: a stage holds its blocks, the first stage the embeddings, the last the final norm
  and its own copy of the tied LM head;
- tensor parallel: what `tensor.BLOCK_PLAN` shards (column-parallel weights and biases split on
  their output, row-parallel weights on their input, their biases replicated), the XL core's
  W_r/u/v, and the vocabulary-split embedding and head, each divided by tp;
- FSDP: every parameter's dim 0 split into dp_shard padded pieces, as `fully_shard` does.
Gradients take what the parameters take; AdamW keeps two fp32 moments per parameter.
Activations and communication buffers (e.g. DDP's gradient buckets) are not included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributed.tensor.parallel import ColwiseParallel

from lmforge.model import ModelConfig, Transformer
from lmforge.parallel.config import ParallelSettings, stage_layers
from lmforge.parallel.data_parallel import uses_fsdp
from lmforge.parallel.tensor import BLOCK_PLAN

ADAMW_MOMENTS = 2
VOCAB_SPLIT = ("tok_emb.weight", "lm_head.weight")


@dataclass
class RankShare:
    pp: int
    tp: int
    dp: int
    parameters: int
    """Elements of the parameters this rank keeps (its shards)."""
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.grad_bytes + self.optimizer_bytes


def memory_plan(config: ModelConfig, settings: ParallelSettings, bytes_per_param: int = 4) -> list[RankShare]:
    """One RankShare per rank, in rank order (pp outermost, then dp, then tp), for a resolved layout."""
    with torch.device("meta"):
        model = Transformer(config)
    fsdp = uses_fsdp(settings)
    stages = stage_layers(config.n_layers, settings.pp)
    shares = []
    for pp in range(settings.pp):
        elements = sum(_local_elements(name, param.shape, settings, fsdp)
                       for name, param in _stage_parameters(model, stages, pp, settings.pp))
        for dp in range(settings.dp):
            for tp in range(settings.tp):
                weights = elements * bytes_per_param
                shares.append(RankShare(pp, tp, dp, elements, weights, weights,
                                        ADAMW_MOMENTS * elements * 4))
    return shares


def _stage_parameters(model: Transformer, stages: list[range], pp: int, n_stages: int):
    """(name, parameter) of stage `pp`; the tied LM head appears once alone, or on the last stage."""
    last = pp == n_stages - 1
    for name, param in model.named_parameters(remove_duplicate=False):
        if name.startswith("blocks."):
            if int(name.split(".")[1]) in stages[pp]:
                yield name, param
        elif name.startswith(("tok_emb.", "pos_emb.")):
            if pp == 0:
                yield name, param
        elif name == "lm_head.weight":
            if last and n_stages > 1:
                yield name, param
        elif last:
            yield name, param


def _local_elements(name: str, shape: torch.Size, settings: ParallelSettings, fsdp: bool) -> int:
    dims = list(shape)
    split = _tp_dim(name)
    if settings.tp > 1 and split is not None:
        dims[split] //= settings.tp
    if fsdp and settings.dp_shard > 1:
        dims[0] = math.ceil(dims[0] / settings.dp_shard)
    return math.prod(dims)


def _tp_dim(name: str) -> int | None:
    """The dimension tensor parallel splits for parameter `name`, or None if replicated."""
    if name in VOCAB_SPLIT or ".attn.core." in name:
        return 0
    parts = name.split(".")
    style = BLOCK_PLAN.get(".".join(parts[2:-1])) if parts[0] == "blocks" else None
    if style is None:
        return None
    kind = parts[-1]
    if isinstance(style, ColwiseParallel):
        return 0
    return 1 if kind == "weight" else None


def format_plan(shares: list[RankShare], settings: ParallelSettings) -> str:
    """A per-rank table in MiB, with the single-process total for comparison."""
    lines = [f"layout: {settings.describe()}", "",
             f"{'rank':>4} {'pp':>3} {'dp':>3} {'tp':>3} {'parameters':>13} {'params MiB':>11} "
             f"{'grads MiB':>10} {'AdamW MiB':>10} {'total MiB':>10}"]
    for rank, s in enumerate(shares):
        lines.append(f"{rank:>4} {s.pp:>3} {s.dp:>3} {s.tp:>3} {s.parameters:>13,} {_mib(s.param_bytes):>11} "
                     f"{_mib(s.grad_bytes):>10} {_mib(s.optimizer_bytes):>10} {_mib(s.total_bytes):>10}")
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.3f}" if n < 2**20 else f"{n / 2**20:,.1f}"
