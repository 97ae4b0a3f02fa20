"""Curation on Ray, for more than one machine: the per-shard tasks and the dedup shuffle as Ray tasks.

`curate` runs the same stages with either executor: ingest and finalise on the driver, filter
and finish as one task per shard, reading and writing the same files and markers under
`OUT/work/` as the local worker processes. So OUT must be on storage every node sees and
lmforge installed on every node; a rerun resumes where a killed one stopped, and the output
equals the local executor's. Imported only when `executor: ray` asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

try:
    import ray
except ImportError as error:  # an optional extra
    raise ImportError("executor 'ray' needs Ray: pip install 'lmforge[ray]'") from error

from lmforge.data.curate.dedup.shuffle import MapFn, ReduceFn


@contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Use this process's Ray instance if it has one; else join `address` for the duration and
    leave it afterwards. "local" always starts a new local instance; None lets Ray choose, and
    Ray then joins the cluster RAY_ADDRESS names, or one `ray start` left on this machine."""
    if ray.is_initialized():
        yield
        return
    ray.init(address=address)
    try:
        yield
    finally:
        ray.shutdown()


def run_tasks(task: Callable[..., Any], calls: list[tuple]) -> Iterator[Any]:
    """Run `task(*call)` for every call as a Ray task; yield the results in call order."""
    remote = ray.remote(task)
    for ref in [remote.remote(*call) for call in calls]:
        yield ray.get(ref)


def shuffle(map_fn: MapFn, calls: list[tuple], reduce_fn: ReduceFn) -> list[np.ndarray]:
    """`dedup.shuffle.Shuffle` on Ray: each map task returns its P partitions as P objects, and
    reduce task p receives partition p of every map task, straight from the object store.

    P is the cluster's CPU count, so that all reducers run in one wave; at least 2, since Ray
    hands a single return value back as it is rather than as a one-element list.
    """
    partitions = max(2, int(ray.cluster_resources().get("CPU", 0)))
    mapper = ray.remote(map_fn).options(num_returns=partitions)
    outputs = [mapper.remote(*call, partitions) for call in calls]
    reducer = ray.remote(reduce_fn)
    return ray.get([reducer.remote(*[output[p] for output in outputs]) for p in range(partitions)])
