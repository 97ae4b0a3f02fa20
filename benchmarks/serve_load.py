"""Closed-loop HTTP load from a process of its own, and the servers it is pointed at: the serving
benchmarks' shared parts (claim_c11_dynamic_batching.py, serve_soak.py).

The client runs in a spawned process so that it never shares a GIL with the driver or the server:
a client in the server's process would steal the event loop it measures. It is closed-loop: C
asyncio tasks on one `httpx.AsyncClient`, each sending its next request when its previous answer
has arrived, so the offered load is the concurrency, not a rate the server may not keep up with.
Every request is recorded (start, latency, status, generated tokens); one that got no HTTP answer
at all (connection refused or reset, client timeout) is recorded with status 0 and counts as lost.

A server is a subprocess in a session of its own (`lmforge serve --config`, or any command),
ready when its readiness URL answers 200, stopped with SIGTERM to its process group (graceful:
uvicorn drains) and, whatever happened, its whole tree killed afterwards (tests/processes.py), so
no worker is left running beside the next measurement.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from realdata import REPO

from lmforge.errors import LmforgeError

sys.path.insert(0, str(REPO / "tests"))
from processes import kill_tree, process_tree, start_in_session  # noqa: E402 - tests/ is not a package

READY_TIMEOUT_S = 300.0
STOP_GRACE_S = 60.0


class ServerStartError(LmforgeError):
    """A server that exited or never became ready; the message ends with its log's tail."""


@dataclass(frozen=True)
class Load:
    """One closed-loop run: `concurrency` clients send `requests` ((path, JSON body), taken in turn
    and cycled) to `url` for `seconds` after `warmup_s` of the same load whose answers are not kept."""

    url: str
    requests: list[tuple[str, dict[str, Any]]]
    concurrency: int
    seconds: float
    warmup_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0
    start_at: float | None = None
    """`time.time()` at which to begin (the driver schedules events against it); None: at once."""


@dataclass
class LoadResult:
    """Per request of the measured part: start (s since it began), latency (s), HTTP status (0: no
    answer), generated tokens (`usage.completion_tokens`, 0 when absent) and the path it went to."""

    started: list[float]
    latency: list[float]
    status: list[int]
    tokens: list[int]
    paths: list[str]
    wall_s: float
    began: float
    """`time.time()` when the measured part began."""
    client_cpu_s: float
    """CPU seconds the client process used in this run, warm-up included."""
    errors: dict[str, int]
    """No-answer requests by exception type."""

    def summary(self, ok_only: bool = True) -> dict[str, Any]:
        """Requests, answers by status, lost, req/s, tokens/s, and P50/P99 latency in ms (over 2xx
        answers when `ok_only`, else over every answered request)."""
        status = np.array(self.status)
        latency = np.array(self.latency)
        kept = latency[(status >= 200) & (status < 300)] if ok_only else latency[status > 0]
        p50, p99 = (np.percentile(kept, [50, 99]) * 1000).tolist() if kept.size else (float("nan"),) * 2
        return {"requests": len(self.status), "by_status": dict(sorted(Counter(self.status).items())),
                "lost": int((status == 0).sum()), "server_errors": int((status >= 500).sum()),
                "rps": float(((status >= 200) & (status < 300)).sum()) / self.wall_s,
                "tokens_per_s": sum(self.tokens) / self.wall_s, "p50_ms": p50, "p99_ms": p99,
                "wall_s": self.wall_s, "client_cpu_s": self.client_cpu_s, "errors": self.errors}

    def where(self, start: float = 0.0, end: float | None = None, path: str | None = None) -> LoadResult:
        """The requests that started in [start, end) seconds (default: to the end) and were sent to
        `path` (default: any); its wall time is the window's length."""
        end = self.wall_s if end is None else end
        keep = [i for i, t in enumerate(self.started)
                if start <= t < end and (path is None or self.paths[i] == path)]
        return LoadResult(*([column[i] for i in keep] for column in (self.started, self.latency, self.status,
                                                                     self.tokens, self.paths)),
                          wall_s=end - start, began=self.began + start, client_cpu_s=0.0, errors={})


def run_load(load: Load) -> LoadResult:
    """The client process's entry point (picklable, for a spawned executor)."""
    return asyncio.run(_run(load))


async def _run(load: Load) -> LoadResult:
    limits = httpx.Limits(max_connections=load.concurrency, max_keepalive_connections=load.concurrency)
    cpu = time.process_time()
    async with httpx.AsyncClient(base_url=load.url, headers=load.headers, limits=limits,
                                 timeout=load.timeout_s, trust_env=False) as client:
        if load.start_at is not None:
            await asyncio.sleep(max(0.0, load.start_at - time.time()))
        todo = itertools.cycle(load.requests)
        if load.warmup_s > 0:
            await _phase(client, todo, load.concurrency, load.warmup_s, None)
        result = LoadResult([], [], [], [], [], 0.0, time.time(), 0.0, {})
        t0 = time.perf_counter()
        await _phase(client, todo, load.concurrency, load.seconds, result)
        result.wall_s = time.perf_counter() - t0
    result.client_cpu_s = time.process_time() - cpu
    return result


async def _phase(client: httpx.AsyncClient, todo: Iterator[tuple[str, dict[str, Any]]], concurrency: int,
                 seconds: float, result: LoadResult | None) -> None:
    """`concurrency` clients until `seconds` have passed; each finishes the request it has sent."""
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def one_client() -> None:
        while (start := time.perf_counter()) < deadline:
            path, body = next(todo)
            status, tokens, error = await _send(client, path, body)
            if result is None:
                continue
            result.started.append(start - t0)
            result.latency.append(time.perf_counter() - start)
            result.status.append(status)
            result.tokens.append(tokens)
            result.paths.append(path)
            if error:
                result.errors[error] = result.errors.get(error, 0) + 1

    await asyncio.gather(*(one_client() for _ in range(concurrency)))


async def _send(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> tuple[int, int, str]:
    """(status, generated tokens, error type); status 0 when no HTTP answer came back."""
    try:
        response = await client.post(path, json=body)
    except httpx.HTTPError as err:
        return 0, 0, type(err).__name__
    tokens = 0
    if response.status_code == 200 and b'"usage"' in response.content:
        tokens = response.json()["usage"].get("completion_tokens", 0)
    return response.status_code, tokens, ""


@contextmanager
def load_process() -> Iterator[ProcessPoolExecutor]:
    """One spawned client process for several runs (`pool.submit(run_load, load)`), already
    started when this yields, so a run's `start_at` is not eaten by the spawn."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        pool.submit(time.time).result()
        yield pool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def thread_settings(threads: int) -> str:
    """The servers' thread settings for a report. OMP_WAIT_POLICY is passed through from this
    environment; where it is unset, `lmforge serve` sets PASSIVE for itself (libgomp's default
    spin-waiting costs a server dearly on an oversubscribed machine) and other servers spin."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    if policy is None:
        return (f"{threads} intra-op threads (OMP_NUM_THREADS, MKL_NUM_THREADS), OMP_WAIT_POLICY unset: "
                f"PASSIVE in `lmforge serve` (its default), libgomp's spin-wait in other servers")
    return f"{threads} intra-op threads (OMP_NUM_THREADS, MKL_NUM_THREADS), OMP_WAIT_POLICY {policy}"


def server_env(threads: int, **extra: str) -> dict[str, str]:
    """This environment with the server's intra-op threads pinned (torch reads OMP_NUM_THREADS)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **extra}


@dataclass(frozen=True)
class ServerCommand:
    """How to start one server and tell when it is ready."""

    command: list[str]
    url: str
    ready_path: str
    env: dict[str, str]
    log: Path


@dataclass
class Running:
    """A server subprocess; once stopped, the CPU its process tree had used and its exit code."""

    process: subprocess.Popen
    cpu_s: float = 0.0
    exit_code: int | None = None
    """None when it did not exit within STOP_GRACE_S of SIGTERM and was killed."""


@contextmanager
def serving(server: ServerCommand) -> Iterator[Running]:
    """The server running until the block ends, ready (its ready path answered 200) when it begins."""
    with server.log.open("ab") as sink:
        running = Running(start_in_session(server.command, stdout=sink, stderr=subprocess.STDOUT,
                                           env=server.env))
    try:
        _wait_ready(running.process, server.url + server.ready_path, server.log)
        yield running
    finally:
        running.cpu_s = tree_cpu_s(running.process.pid)
        running.exit_code = stop(running.process)


def stop(process: subprocess.Popen) -> int | None:
    """SIGTERM to the server's process group, then its exit code; None if it had to be killed.
    Whatever is left of its tree is killed in either case."""
    code = None
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        code = process.wait(STOP_GRACE_S)
    kill_tree(process)
    process.wait()
    return code


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by `pid`, its descendants and the children they have reaped (read
    before stopping a server, as workers it does not reap would go uncounted)."""
    ticks = 0
    for member in process_tree(pid):
        with suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _wait_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline and process.poll() is None:
            with suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:]
    state = f"exited with code {process.poll()}" if process.poll() is not None else "was not ready in time"
    raise ServerStartError(f"{' '.join(map(str, process.args))} {state}; log {log}:\n{tail}")


def lmforge_server(settings: dict[str, Any], folder: Path, threads: int, **env: str) -> ServerCommand:
    """`lmforge serve` on `settings` (written as its --config YAML into `folder`); `settings` must
    hold the port."""
    port = settings["port"]
    config = folder / f"serve-{port}.yaml"
    config.write_text(yaml.safe_dump(settings))
    return ServerCommand([sys.executable, "-m", "lmforge", "serve", "--config", str(config)],
                         f"http://127.0.0.1:{port}", "/v2/health/ready", server_env(threads, **env),
                         folder / f"serve-{port}.log")


def scrape(url: str, headers: dict[str, str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The server's /metrics samples: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10, trust_env=False).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
