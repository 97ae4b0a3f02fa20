"""Data parallelism: DDP (replicas all-reduce gradients) or FSDP2 (parameters sharded too).

FSDP2 shards each block separately, so only one block's full parameters exist at a time, then
the root (embeddings, final norm, LM head). Over a 2-D (dp_replicate, dp_shard) mesh it is
HSDP: shards within a group, replicas across groups. DDP only when it is the sole sharding of
the parameters (no tensor parallel), as in torchtitan.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from lmforge.parallel.config import ParallelSettings


def uses_fsdp(settings: ParallelSettings) -> bool:
    return settings.dp_shard > 1 or (settings.dp_replicate > 1 and settings.tp > 1)


def apply_data_parallel(module: nn.Module, blocks: Iterable[nn.Module], mesh: DeviceMesh,
                        settings: ParallelSettings) -> nn.Module:
    """Wrap `module` for the layout's data parallelism; returns the module to call."""
    if uses_fsdp(settings):
        dp_mesh = mesh["dp_replicate", "dp_shard"] if settings.dp_replicate > 1 else mesh["dp_shard"]
        for block in blocks:
            fully_shard(block, mesh=dp_mesh)
        fully_shard(module, mesh=dp_mesh)
        return module
    if settings.dp_replicate > 1:
        return DistributedDataParallel(module, process_group=mesh["dp_replicate"].get_group())
    return module
