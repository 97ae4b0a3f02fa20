"""Serving the classifier briefly on 127.0.0.1 to simulated users, who rate a share of the answers
from the built-in corpus's truth (+1 right; -1 wrong, with the right label, as a user would say).

The server is the real one (HTTP, auth, batching, the records log with PII anonymised, A/B
routing), in a thread of this process; the users are a thread pool of HTTP clients. What the
users saw (latency per request) and the truth of each request id go to `serving/`.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from lmforge.artifacts import atomic_dir, atomic_write_json, atomic_write_text, write_manifest
from lmforge.pipeline.stages import Outcome, RunContext, complete, read_json
from lmforge.serve.background import BackgroundServer, free_port
from lmforge.serve.settings import ServeSettings

ADMIN_KEYS_ENV = "LMFORGE_RUN_ADMIN_KEYS"
"""Where the run hands the server its one-off admin key (the server reads admin keys from the environment)."""


@dataclass
class Served:
    """A server of this run and the keys its simulated users and its operator hold."""

    server: BackgroundServer
    user_key: str
    admin_key: str

    def client(self) -> httpx.Client:
        return self.server.client(self.user_key)


def records_url(ctx: RunContext) -> str:
    """The run's records database: the configured URL, or a SQLite file in the run folder."""
    return ctx.cfg.serve.records_url or f"sqlite:///{(ctx.root / 'records' / 'records.db').resolve()}"


@contextmanager
def serving(ctx: RunContext, models: dict[str, Path],
            experiments: list[dict] | None = None) -> Iterator[Served]:
    """The run's models served on a free 127.0.0.1 port with one-off keys, until the block ends."""
    user_key, admin_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    (ctx.root / "records").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lmforge-run-") as tmp:
        keys = Path(tmp) / "api-keys"
        keys.write_text(user_key + "\n", encoding="utf-8")
        settings = ServeSettings(
            models=[{"path": p, "name": n, "runtime": ctx.cfg.serve.runtime} for n, p in models.items()],
            port=free_port(), device=ctx.cfg.device, api_keys_file=keys, admin_keys_env=ADMIN_KEYS_ENV,
            rate_limit=1e6, rate_burst=1_000_000, redis_url=ctx.cfg.serve.redis_url,
            records_url=records_url(ctx), experiments=experiments or [])
        previous = os.environ.get(ADMIN_KEYS_ENV)
        os.environ[ADMIN_KEYS_ENV] = admin_key
        try:
            server = BackgroundServer(settings)
        finally:
            if previous is None:
                os.environ.pop(ADMIN_KEYS_ENV)
            else:
                os.environ[ADMIN_KEYS_ENV] = previous
        with server:
            yield Served(server, user_key, admin_key)


def labelled_rows(path: Path) -> list[tuple[str, str]]:
    """(text, label) rows of a task split's TSV."""
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return [(text, label) for text, _, label in (row.rpartition("\t") for row in rows if row.strip())]


def serve_stage(ctx: RunContext) -> Outcome:
    out = ctx.root / "serving"
    if not complete(out):
        _serve(ctx, out)
    metrics = read_json(out / "metrics.json")
    lat = metrics["latency_ms"]
    return Outcome({"serving": ctx.relative(out)},
                   f"{metrics['requests']} requests at {metrics['throughput_rps']:.1f} req/s, P50 "
                   f"{lat['p50']:.0f} ms, P99 {lat['p99']:.0f} ms, {metrics['errors']} errors; served "
                   f"accuracy {metrics['accuracy']:.3f}",
                   {k: v for k, v in metrics.items() if k != "latencies_ms"})


def _serve(ctx: RunContext, out: Path) -> None:
    s = ctx.cfg.serve
    database = ctx.root / "records" / "records.db"
    if s.records_url is None:
        database.unlink(missing_ok=True)  # an interrupted attempt's requests would be mined twice
    pool = labelled_rows(ctx.path("tasks", "classify") / "traffic.tsv")
    rng = random.Random(ctx.cfg.tasks.seed)
    stream = [(f"user-{rng.randrange(s.requests // 4 + 1)}", *rng.choice(pool),
               rng.random() < s.feedback_share) for _ in range(s.requests)]
    with serving(ctx, {"classify": ctx.path("finetune", "classify")}) as served, served.client() as client:
        def send(request: tuple[str, str, str, bool]) -> dict:
            user, text, truth, rates = request
            began = time.perf_counter()
            response = client.post("/v1/classify", json={"model": "classify", "input": text},
                                   headers={"X-User-Id": user})
            latency = (time.perf_counter() - began) * 1000
            if response.status_code != 200:
                return {"status": response.status_code, "latency_ms": latency}
            answer = response.json()["results"][0]
            right = answer["label"] == truth
            if rates:
                feedback = {"request_id": answer["id"], "rating": 1 if right else -1} | ({} if right else
                                                                                        {"label": truth})
                client.post("/v1/feedback", json=feedback)
            return {"status": 200, "latency_ms": latency, "id": answer["id"], "truth": truth, "right": right,
                    "rated": rates}

        began = time.perf_counter()
        with ThreadPoolExecutor(s.concurrency) as users:
            answers = list(users.map(send, stream))
        seconds = time.perf_counter() - began
    ok = [a for a in answers if a["status"] == 200]
    latencies = [a["latency_ms"] for a in answers]
    quantiles = statistics.quantiles(latencies, n=100)
    metrics = {"model": "classify", "requests": len(answers), "errors": len(answers) - len(ok),
               "seconds": seconds, "concurrency": s.concurrency, "throughput_rps": len(answers) / seconds,
               "latency_ms": {"mean": statistics.fmean(latencies), "p50": quantiles[49], "p90": quantiles[89],
                              "p99": quantiles[98]},
               "latencies_ms": latencies, "accuracy": sum(a["right"] for a in ok) / max(len(ok), 1),
               "feedback": {"positive": sum(a["rated"] and a["right"] for a in ok),
                            "negative": sum(a["rated"] and not a["right"] for a in ok)}}
    with atomic_dir(out) as tmp:
        atomic_write_json(tmp / "metrics.json", metrics)
        truth = [json.dumps({"request_id": a["id"], "label": a["truth"]}) + "\n" for a in ok]
        atomic_write_text(tmp / "truth.jsonl", "".join(truth))
        settings = ctx.cfg.serve.model_dump(mode="json", exclude={"redis_url", "records_url"})  # secrets
        write_manifest(tmp, "serve", settings,
                       parents=[ctx.path("finetune", "classify"), ctx.path("tasks", "classify")])
