"""Tensor parallelism (Megatron's column -> row split) applied to the single-device model.

Per block: W_q, W_k, W_v and the MLP's first matrix are column-parallel (each rank computes
its own heads / hidden columns from the replicated input), W_o and the MLP's second matrix are
row-parallel (partial sums, one all-reduce per sub-layer). The attention core then only ever
sees its rank's heads: the model splits heads with `view(..., -1, head_dim)`.

The XL position terms are per head too: W_r's output rows and the u/v biases belong to heads.
DTensor has no sharding rule for XL's rel_shift view trick, so `HeadShards` shards those three
along their head dimension as DTensors (what optimizers and checkpoints see) and runs the core
on the local shards (what the arithmetic needs); autograd carries gradients back to the shards.
The token embedding is split over the vocabulary (row-parallel) and the tied LM head over its
output vocabulary (column-parallel, logits gathered), sharing one vocabulary-sharded matrix.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from torch.distributed.tensor.parallel.style import ParallelStyle

from lmforge.model.positions import RelativeAttention
from lmforge.model.xl import Block

BLOCK_PLAN = {
    "attn.wq": ColwiseParallel(),
    "attn.wk": ColwiseParallel(),
    "attn.wv": ColwiseParallel(),
    "attn.wo": RowwiseParallel(),
    "mlp.w_in": ColwiseParallel(),
    "mlp.w_out": RowwiseParallel(),
}


class HeadShards(ParallelStyle):
    """Shard every parameter of a module along dim 0 (its heads) and compute on local shards."""

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        owners = []
        for sub in module.modules():
            for name, param in list(sub.named_parameters(recurse=False)):
                sharded = distribute_tensor(param.data, device_mesh, [Shard(0)])
                sub.register_parameter(name, nn.Parameter(sharded, requires_grad=param.requires_grad))
                owners.append((sub, name))
        forward = module.forward

        def local_forward(*args, **kwargs):
            held = [(sub, name, sub._parameters[name]) for sub, name in owners]
            try:
                for sub, name, param in held:
                    sub._parameters[name] = param.to_local()  # differentiable: grads reach the shard
                return forward(*args, **kwargs)
            finally:
                for sub, name, param in held:
                    sub._parameters[name] = param

        module.forward = local_forward
        return module


def apply_tensor_parallel(blocks: Iterable[Block], tp_mesh: DeviceMesh, tok_emb: nn.Embedding | None,
                          lm_head: nn.Linear | None) -> None:
    """Shard `blocks` in place; shard the embedding and LM head where this rank holds them."""
    for block in blocks:
        parallelize_module(block, tp_mesh, BLOCK_PLAN)
        if isinstance(block.attn.core, RelativeAttention):
            parallelize_module(block.attn.core, tp_mesh, HeadShards())
    tied = tok_emb is not None and lm_head is not None and lm_head.weight is tok_emb.weight
    if tok_emb is not None:
        parallelize_module(tok_emb, tp_mesh, RowwiseParallel(input_layouts=Replicate()))
    if lm_head is not None:
        parallelize_module(lm_head, tp_mesh, ColwiseParallel(output_layouts=Replicate()))
    if tied:  # both split the vocabulary along dim 0, so one sharded matrix serves both again
        lm_head.weight = tok_emb.weight
