"""Parallelism applied to the single-device model from outside, on one device mesh.

Order (torchtitan's): cut the layer stack into pipeline stages, shard each stage for tensor
parallel, then wrap it for data parallel (DDP, or FSDP2 / HSDP).
"""

from lmforge.parallel.config import ParallelSettings, check_layout, stage_layers
from lmforge.parallel.data_parallel import apply_data_parallel, uses_fsdp
from lmforge.parallel.mesh import Layout, build_layout
from lmforge.parallel.pipeline import (
    StageModule,
    build_schedule,
    build_stage,
    sync_tied_gradients,
    tied_group,
)
from lmforge.parallel.tensor import apply_tensor_parallel

__all__ = [
    "Layout",
    "ParallelSettings",
    "StageModule",
    "apply_data_parallel",
    "apply_tensor_parallel",
    "build_layout",
    "build_schedule",
    "build_stage",
    "check_layout",
    "stage_layers",
    "sync_tied_gradients",
    "tied_group",
    "uses_fsdp",
]
