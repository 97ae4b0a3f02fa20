"""Where curation's parallel work runs: worker processes on this machine, or Ray tasks on a cluster.

An executor is a pair: `RunTasks` runs the per-shard tasks (filter, finish) in parallel, and
`Decide` is the global dedup pass. Both executors read and write the same files under
`OUT/work/`, so they give the same output and resume each other's runs. Ray is imported only
when `executor: ray` asks for it: it is an optional extra (`pip install 'lmforge[ray]'`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from lmforge.data.curate.dedup import shuffle, stage

RunTasks = Callable[[Callable[..., Any], list[tuple]], Iterator[Any]]
"""run_tasks(task, calls): `task(*call)` for every call, in parallel, yielding the results in call order."""
Decide = Callable[[list[Path], Path], None]
"""decide(key_files, out): the global dedup pass, from every shard's keys to `dedup.json`."""


@contextmanager
def executor(kind: Literal["local", "ray"], workers: int,
             ray_address: str | None) -> Iterator[tuple[RunTasks, Decide]]:
    """(run_tasks, decide) of the `kind` executor, for the duration of a run."""
    if kind == "ray":
        from lmforge.data.curate import ray_executor

        with ray_executor.connected(ray_address):
            yield ray_executor.run_tasks, partial(shuffle.decide, shuffle=ray_executor.shuffle)
    else:
        yield partial(run_in_processes, workers=workers), stage.decide


def run_in_processes(task: Callable[..., Any], calls: list[tuple], workers: int) -> Iterator[Any]:
    """The local executor's `RunTasks`: `workers` processes, or this process alone when 1."""
    if workers == 1 or len(calls) <= 1:
        yield from (task(*call) for call in calls)
        return
    # spawn, not fork: the caller may hold torch/OpenMP threads that a fork would copy.
    with ProcessPoolExecutor(min(workers, len(calls)), mp_context=get_context("spawn")) as pool:
        for future in [pool.submit(task, *call) for call in calls]:
            yield future.result()
