"""Soak run of `lmforge serve`: N concurrent clients of mixed classification and completion traffic
for T seconds against a server whose result cache is a real Redis, through a Redis crash and a
model hot-swap. What it checks is what an operator relies on: no 5xx and no request lost while the
cache dies and comes back and while a new model version is swapped in.

    .venv/bin/python benchmarks/serve_soak.py                 # fine-tune `small`; 16 clients, 300 s
    .venv/bin/python benchmarks/serve_soak.py --model runs/x/models/y-classify --clients 16 --seconds 300
    .venv/bin/python benchmarks/serve_soak.py --quick         # smoke run (12 s of load), no results file

Timeline (t = 0 when the clients start): Redis (`redis-server`, in memory, `maxmemory` with
allkeys-lfu as result_cache.py asks) is SIGKILLed at T/3 and started again, empty, on the same port
at T/2; at 2T/3 `POST /admin/models/{name}/load` (admin key) loads a copy of the model folder, which
the server builds and warms beside the serving version and then swaps in. Traffic: one request in
four a greedy `/v1/completions` (cacheable), the rest `/v1/classify` of one SST-2 test sentence,
both drawn Zipf-like (weight 1/rank) from fixed pools, so repeats reach the cache. The client is
serve_load.py's closed loop in a process of its own; every request is recorded, and one that got no
HTTP answer at all counts as lost. The cache hit rate comes from the server's own
`lmforge_cache_requests_total`, scraped at every event. Writes benchmarks/results/serve_soak.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
import torch
from finetune_quality import sst2_classifier
from realdata import data_dir
from serve_load import (
    Load,
    LoadResult,
    ServerStartError,
    free_port,
    kill_tree,
    lmforge_server,
    load_process,
    run_load,
    scrape,
    serving,
    start_in_session,
    thread_settings,
)
from train_throughput import foreign_load, machine_jiffies

from lmforge.data.tasks import read_text_labels

RESULTS = Path(__file__).parent / "results" / "serve_soak.md"
KEY, ADMIN = "soak-user-key", "soak-admin-key"
NAME = "sst2"
CLASSIFY, COMPLETE = "/v1/classify", "/v1/completions"
REDIS_READY_S = 10.0


class RedisServer:
    """`redis-server` on a free port of 127.0.0.1, in memory only; `kill()` is a crash (SIGKILL),
    `start()` again comes back empty on the same port (as the test suite's fixture does)."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise ServerStartError("redis-server not found on PATH: install Debian's redis-server package")
        command = [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lfu",
                   "--dir", str(self.folder)]
        self.process = start_in_session(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + REDIS_READY_S
        while True:
            try:
                probe.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise ServerStartError(f"redis-server on port {self.port} did not answer PING") from None
                time.sleep(0.05)
            finally:
                probe.close()

    def kill(self) -> None:
        if self.process is not None:
            kill_tree(self.process)
            self.process.wait()
            self.process = None


def traffic(data: Path, args: argparse.Namespace, n: int = 20_000) -> list[tuple[str, dict[str, Any]]]:
    """The request sequence the clients take in turn (cycled): Zipf-like draws from fixed pools."""
    sentences = [e.text.strip() for e in read_text_labels(data / "sst2/test.tsv", "sentence", "label")]
    rng = random.Random(0)
    rng.shuffle(sentences)
    texts, prompts = sentences[:args.distinct], sentences[args.distinct:args.distinct + args.distinct // 4]
    texts = rng.choices(texts, weights=[1 / rank for rank in range(1, len(texts) + 1)], k=n)
    prompts = rng.choices(prompts, weights=[1 / rank for rank in range(1, len(prompts) + 1)], k=n)
    return [(COMPLETE, {"model": NAME, "prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0})
            if rng.random() < args.generate_share else (CLASSIFY, {"model": NAME, "input": text})
            for text, prompt in zip(texts, prompts, strict=True)]


def cache_counts(metrics: dict) -> dict[str, float]:
    """Result-cache look-ups so far by outcome (hit, miss, error: Redis down)."""
    return {result: metrics.get(("lmforge_cache_requests_total", (("cache", "result"), ("result", result))),
                                0.0) for result in ("hit", "miss", "error")}


def swap(url: str, folder: Path) -> dict[str, Any]:
    """Load `folder` as the new version of the model (admin key); status, seconds and version."""
    t0 = time.perf_counter()
    response = httpx.post(f"{url}/admin/models/{NAME}/load", json={"path": str(folder)},
                          headers={"Authorization": f"Bearer {ADMIN}"}, timeout=600, trust_env=False)
    body = response.json() if response.headers.get("content-type") == "application/json" else {}
    return {"status": response.status_code, "seconds": time.perf_counter() - t0,
            "version": body.get("version")}


def soak(model: Path, root: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One soak run: its load result, the events with their times, the cache counts at each event,
    the swap's answer, how the server stopped, and the foreign CPU load."""
    copy = shutil.copytree(model, root / "swap" / model.name)
    cache = RedisServer(root)
    cache.start()
    settings = {"models": [{"path": str(model), "name": NAME}], "port": free_port(), "device": "cpu",
                "redis_url": cache.url, "rate_limit": 1e9, "rate_burst": 10**9}
    server = lmforge_server(settings, root, args.threads, LMFORGE_API_KEYS=KEY, LMFORGE_ADMIN_KEYS=ADMIN)
    user = {"Authorization": f"Bearer {KEY}"}
    seconds = args.seconds
    events: list[tuple[float, str]] = []
    counts: list[dict[str, float]] = []
    swapped: dict[str, Any] = {}
    schedule = [(seconds / 3, "Redis killed", cache.kill),
                (seconds / 2, "Redis started again, empty", cache.start),
                (2 * seconds / 3, "model swap requested", lambda: swapped.update(swap(server.url, copy)))]
    start, own = machine_jiffies(), time.process_time()
    try:
        with load_process() as pool, serving(server) as running:
            counts.append(cache_counts(scrape(server.url, user)))
            begin = time.time() + 1.0
            load = pool.submit(run_load, Load(server.url, traffic(data, args), args.clients, seconds,
                                              headers=user, start_at=begin))
            for at, what, action in schedule:
                time.sleep(max(0.0, begin + at - time.time()))
                counts.append(cache_counts(scrape(server.url, user)))
                events.append((time.time() - begin, what))
                action()
            result = load.result()
            counts.append(cache_counts(scrape(server.url, user)))
    finally:
        cache.kill()
    log = server.log.read_text(errors="replace")
    return {"result": result, "events": events, "counts": counts, "swap": swapped,
            "exit_code": running.exit_code, "drained": "Application shutdown complete" in log,
            "tracebacks": log.count("Traceback"),
            "foreign": foreign_load(start, time.process_time() - own + running.cpu_s + result.client_cpu_s)}


def hit_rate(before: dict[str, float], after: dict[str, float]) -> tuple[str, int]:
    """(hits / look-ups, look-ups that found Redis down) between two scrapes."""
    delta = {k: after[k] - before[k] for k in after}
    lookups = sum(delta.values())
    return (f"{delta['hit'] / lookups:.0%}" if lookups else "-"), int(delta["error"])


def ms(value: float) -> str:
    return f"{value:.0f}" if value == value else "-"


def phase_table(run: dict[str, Any], seconds: float) -> list[str]:
    """One row per phase, bounded by the times the events actually happened (the driver shares
    the machine, so they may come late)."""
    result: LoadResult = run["result"]
    names = ("Redis up", "Redis down", "Redis back (empty)", "after the swap request")
    bounds = (0.0, *(t for t, _ in run["events"]), seconds)
    lines = ["| phase | from s | to s | requests | req/s | 5xx | lost | P50 ms | P99 ms | cache hit rate | "
             "cache look-ups with Redis down |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, name in enumerate(names):
        p = result.where(bounds[i], bounds[i + 1]).summary()
        rate, down = hit_rate(run["counts"][i], run["counts"][i + 1])
        lines.append(f"| {name} | {bounds[i]:.0f} | {bounds[i + 1]:.0f} | {p['requests']} | {p['rps']:.1f} | "
                     f"{p['server_errors']} | {p['lost']} | {ms(p['p50_ms'])} | {ms(p['p99_ms'])} | {rate} | "
                     f"{down} |")
    return lines


def route_table(result: LoadResult) -> list[str]:
    lines = ["| route | requests | req/s | P50 ms | P99 ms | answers |", "|---|---:|---:|---:|---:|---|"]
    for name, path in (("all", None), ("classify", CLASSIFY), ("completions", COMPLETE)):
        p = result.where(path=path).summary()
        answers = ", ".join(f"{code}: {n}" for code, n in p["by_status"].items())
        lines.append(f"| {name} | {p['requests']} | {p['rps']:.1f} | {ms(p['p50_ms'])} | {ms(p['p99_ms'])} | "
                     f"{answers} |")
    return lines


def checks(run: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(check, measured, required, passed)."""
    total = run["result"].summary()
    swapped = run["swap"]
    return [("5xx answers", str(total["server_errors"]), "0", total["server_errors"] == 0),
            ("requests lost (sent, never answered)", str(total["lost"]), "0", total["lost"] == 0),
            ("hot-swap", f"HTTP {swapped.get('status')} after {swapped.get('seconds', 0):.1f} s, version "
             f"{swapped.get('version')}", "HTTP 200", swapped.get("status") == 200),
            ("graceful stop on SIGTERM", f"exit code {run['exit_code']}, lifespan shutdown "
             f"{'complete' if run['drained'] else 'not complete'}", "exits, shutdown complete",
             run["exit_code"] is not None and run["drained"])]


def report(run: dict[str, Any], args: argparse.Namespace, elapsed: float) -> str:
    result: LoadResult = run["result"]
    rate, down = hit_rate(run["counts"][0], run["counts"][-1])
    events = "; ".join(f"{what} at {t:.1f} s" for t, what in run["events"])
    return "\n".join([
        "# Soak: `lmforge serve` through a Redis crash and a model hot-swap", "",
        f"{args.clients} closed-loop clients for {args.seconds:g} s; {1 - args.generate_share:.0%} "
        f"`/v1/classify` (one SST-2 sentence, {args.distinct} distinct), {args.generate_share:.0%} greedy "
        f"`/v1/completions` of {args.max_tokens} tokens ({args.distinct // 4} distinct prompts), Zipf-like "
        f"repeats. Result cache in Redis; rate limit out of the way. "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared by the server, "
        f"Redis, the client process and the driver; server at {thread_settings(args.threads)}, torch "
        f"{torch.__version__}. Foreign CPU load (other processes' share of the machine): "
        f"{run['foreign']:.0%}. {elapsed:.0f} s in all.", "",
        f"Events: {events}.", "",
        "| check | measured | required | |", "|---|---|---|---|",
        *(f"| {name} | {got} | {need} | {'pass' if ok else 'FAIL'} |" for name, got, need, ok in checks(run)),
        f"| tracebacks in the server log | {run['tracebacks']} | - | |", "",
        f"Cache hit rate over the run: {rate} of result-cache look-ups ({down} found Redis down).", "",
        *route_table(result), "",
        "## By phase", "",
        *phase_table(run, args.seconds), "",
        "Latencies are of 2xx answers. A phase holds the requests that started in it. While Redis is "
        "down the server tries it again every 5 s (RedisCache.retry_seconds), so look-ups just after "
        "the restart may still count as Redis down. The swapped-in folder is a byte copy, so its "
        "version (the manifest's digest) and its cache entries stay the same. uvicorn re-raises "
        "SIGTERM once its graceful shutdown is done, hence exit code -15.", ""])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a folder with a classify head and a causal LM head "
                                                   "(default: build an SST-2 classifier)")
    parser.add_argument("--preset", default="small", help="of the classifier built when no --model")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--train", type=int, default=8000, help="SST-2 training rows")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--generate-share", type=float, default=0.25, help="share of completion requests")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--distinct", type=int, default=400, help="distinct classify texts")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="server's intra-op threads")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny preset, few steps, 4 clients, 12 s; prints, writes no file")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.pretrain_steps, args.finetune_steps, args.train, args.dev = "tiny", 10, 10, 300, 100
        args.clients, args.seconds, args.max_tokens = 4, 12.0, 8
    return args


def main() -> int:
    args = parse_args()
    data = data_dir()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.time()
        model = args.model or sst2_classifier(data, root, args, preset=args.preset)
        run = soak(model, root, data, args)
        text = report(run, args, time.time() - started)
    if not args.quick:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text)
    print(text)
    return 0 if all(ok for *_, ok in checks(run)) else 1


if __name__ == "__main__":
    sys.exit(main())
