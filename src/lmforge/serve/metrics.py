"""The server's Prometheus metrics, served on `/metrics` and read by `deploy/prometheus/alerts.yml`.

Our own histograms rather than Triton-style cumulative microsecond counters or summaries: a
histogram in base units (seconds) can be summed across replicas and its quantiles estimated with
`histogram_quantile`, and the request-duration buckets hold 0.5 exactly so that the "P99 above
500 ms" alert compares against a bucket boundary, where the estimate is exact rather than
interpolated. Names follow Prometheus conventions: prefix `lmforge_`, unit suffix, counters ending
`_total`, build metadata in an `_info` series with value 1.

Each `ServerMetrics` owns its registry, never prometheus_client's global one, so several servers
(or tests) in one process keep separate counts.

Labels are bounded by construction: the names of loaded models, route templates, and the fixed
outcome and cache vocabularies below. Never put request text, user ids, API keys or anything else a
client chooses into a label: each distinct value is a new time series kept for weeks, and the
metrics endpoint is not access-controlled like the logs.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

OUTCOMES = ("ok", "error", "rejected", "invalid", "cancelled")
"""A request's outcome: ok; error (5xx, our fault); rejected (429/503 from admission control, the queue
was full or the deadline passed); invalid (other 4xx, the client's fault); cancelled (client gone)."""
CACHES = ("result", "prefix")
"""The result cache (whole responses, Redis or in-process) and the prefix cache (recurrence memory)."""
CACHE_RESULTS = ("hit", "miss", "error")
"""`error`: the cache could not be read (e.g. Redis down) and the request was served without it."""

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds; 0.5 is the P99 alert's threshold. Up to 2 minutes, for long generations."""
QUEUE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds; finer at the bottom, where the batcher's 2 ms queue delay lies."""
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
"""Rows per executed batch, up to the batcher's maximum of 64."""


class ServerMetrics:
    """The metrics of one server, in a registry of its own; `registry` is public so tests and an
    embedding application can read samples back (`registry.get_sample_value`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lmforge_requests_total", "Requests finished, by outcome.",
                                ["model", "route", "outcome"], registry=r)
        self.request_duration = Histogram(
            "lmforge_request_duration_seconds", "Time from receiving a request to its last byte.",
            ["model", "route"], buckets=REQUEST_BUCKETS, registry=r)
        self.queue_duration = Histogram(
            "lmforge_queue_duration_seconds", "Time a request waited before its batch ran.",
            ["model"], buckets=QUEUE_BUCKETS, registry=r)
        self.batch_size = Histogram("lmforge_batch_size", "Rows per executed batch.",
                                    ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("lmforge_queue_depth", "Requests waiting for a batch.",
                                 ["model"], registry=r)
        self.queue_capacity = Gauge("lmforge_queue_capacity", "Requests the queue holds before rejecting.",
                                    ["model"], registry=r)
        self.generated_tokens = Counter("lmforge_generated_tokens_total", "Tokens generated.",
                                        ["model"], registry=r)
        self.prompt_tokens = Counter("lmforge_prompt_tokens_total", "Prompt tokens read.",
                                     ["model"], registry=r)
        self.first_token = Histogram(
            "lmforge_time_to_first_token_seconds", "Time from a generation request to its first token.",
            ["model"], buckets=FIRST_TOKEN_BUCKETS, registry=r)
        self.running = Gauge("lmforge_running_sequences", "Sequences in the continuous batch.",
                             ["model"], registry=r)
        self.cache_requests = Counter("lmforge_cache_requests_total", "Cache look-ups, by result.",
                                      ["cache", "result"], registry=r)
        self.model_info = Info("lmforge_model", "The version and runtime each served model runs on.",
                               ["model"], registry=r)
        self.ready = Gauge("lmforge_ready", "1 when every model is loaded and warmed up, else 0.", registry=r)

    def observe_request(self, model: str, route: str, outcome: str, seconds: float) -> None:
        """One finished request; `route` is the route template (`/v2/models/{name}/infer`), never the
        URL path, and `model` a loaded model's name, never one a client made up."""
        _check(outcome, OUTCOMES, "outcome")
        self.requests.labels(model, route, outcome).inc()
        self.request_duration.labels(model, route).observe(seconds)

    def observe_batch(self, model: str, rows: int, queue_seconds: Iterable[float] = ()) -> None:
        """One executed batch (or decoding step) of `rows` rows; `queue_seconds` holds how long each
        request admitted into it had waited (none for a decoding step that admitted no one)."""
        self.batch_size.labels(model).observe(rows)
        queue = self.queue_duration.labels(model)
        for seconds in queue_seconds:
            queue.observe(seconds)

    def set_queue(self, model: str, depth: int, capacity: int) -> None:
        """The queue's current depth and its bound; their ratio drives the saturation alert."""
        self.queue_depth.labels(model).set(depth)
        self.queue_capacity.labels(model).set(capacity)

    def observe_tokens(self, model: str, prompt: int, generated: int) -> None:
        """The token counts of one generation request (or of the part streamed so far)."""
        self.prompt_tokens.labels(model).inc(prompt)
        self.generated_tokens.labels(model).inc(generated)

    def observe_first_token(self, model: str, seconds: float) -> None:
        self.first_token.labels(model).observe(seconds)

    def set_running(self, model: str, sequences: int) -> None:
        self.running.labels(model).set(sequences)

    def observe_cache(self, cache: str, result: str, count: int = 1) -> None:
        _check(cache, CACHES, "cache")
        _check(result, CACHE_RESULTS, "cache result")
        self.cache_requests.labels(cache, result).inc(count)

    def set_model(self, model: str, version: str, runtime: str) -> None:
        """Record what `model` runs; a reload replaces the series rather than adding one beside it."""
        self.model_info.labels(model).info({"version": version, "runtime": runtime})

    def set_ready(self, ready: bool) -> None:
        self.ready.set(1 if ready else 0)

    def exposition(self) -> tuple[bytes, str]:
        """The body and content type a `/metrics` route returns (Prometheus text format)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    """Label vocabularies are fixed so a typo cannot open a new series the alerts never see."""
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")
