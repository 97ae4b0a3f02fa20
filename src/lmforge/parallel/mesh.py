"""One `DeviceMesh` for every kind of parallelism, and where this rank sits in it.

Dimensions, outermost first: pp, dp_replicate, dp_shard, tp (torchtitan's order: tensor
parallel innermost, where ranks talk most; pipeline outermost, where they talk least).
Size-1 dimensions are kept so every coordinate is always defined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from lmforge.parallel.config import ParallelSettings

DIMS = ("pp", "dp_replicate", "dp_shard", "tp")


@dataclass
class Layout:
    """The resolved degrees plus this rank's coordinates; `mesh` is None in a single process."""

    settings: ParallelSettings
    mesh: DeviceMesh | None
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """Where this rank's share of the model and its batches live."""

    @classmethod
    def single(cls, device: torch.device | None = None) -> Layout:
        return cls(ParallelSettings(dp_shard=1), None, device=device or torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.mesh is not None

    def coordinate(self, dim: str) -> int:
        return 0 if self.mesh is None else self.mesh.get_local_rank(dim)

    @property
    def pp_rank(self) -> int:
        return self.coordinate("pp")

    @property
    def tp_rank(self) -> int:
        return self.coordinate("tp")

    @property
    def dp_rank(self) -> int:
        """Index of this rank's slice of the batch among the dp_replicate x dp_shard slices."""
        return self.coordinate("dp_replicate") * self.settings.dp_shard + self.coordinate("dp_shard")

    @property
    def first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def last_stage(self) -> bool:
        return self.pp_rank == self.settings.pp - 1

    @property
    def random_stream(self) -> int:
        """Index of this rank's random stream: one per (dp slice, stage), shared by tp ranks."""
        return self.dp_rank * self.settings.pp + self.pp_rank

    @property
    def writes_stage(self) -> bool:
        """One rank per pipeline stage (dp and tp coordinate 0) writes that stage's checkpoint shard."""
        return self.dp_rank == 0 and self.tp_rank == 0

    @property
    def reports(self) -> bool:
        """Ranks whose loss counts once in the global sum: last stage, tp rank 0, every dp slice."""
        return self.last_stage and self.tp_rank == 0


def build_layout(settings: ParallelSettings, device: torch.device) -> Layout:
    """The mesh over the already-initialised default process group, on `device`'s type."""
    world, rank = dist.get_world_size(), dist.get_rank()
    shape = (settings.pp, settings.dp_replicate, settings.dp_shard, settings.tp)
    mesh = init_device_mesh(device.type, shape, mesh_dim_names=DIMS)
    return Layout(settings, mesh, rank, world, device)
