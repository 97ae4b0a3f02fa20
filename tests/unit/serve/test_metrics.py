"""ServerMetrics: each observation lands in the series it names, with those labels and no others, in a
registry of its own; the exposition parses as Prometheus text."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmforge.serve.metrics import ServerMetrics

ROUTE = "/v2/models/{name}/infer"


@pytest.fixture
def metrics() -> ServerMetrics:
    return ServerMetrics()


def value(metrics: ServerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_request_is_counted_by_outcome_and_timed_by_route(metrics):
    metrics.observe_request("m", ROUTE, "ok", 0.3)
    metrics.observe_request("m", ROUTE, "ok", 0.2)
    metrics.observe_request("m", ROUTE, "rejected", 0.7)
    metrics.observe_request("other", "/v1/completions", "error", 2.0)

    assert value(metrics, "lmforge_requests_total", model="m", route=ROUTE, outcome="ok") == 2
    assert value(metrics, "lmforge_requests_total", model="m", route=ROUTE, outcome="rejected") == 1
    assert value(metrics, "lmforge_requests_total", model="m", route=ROUTE, outcome="error") is None
    assert value(metrics, "lmforge_requests_total", model="other", route="/v1/completions",
                 outcome="error") == 1
    bucket = "lmforge_request_duration_seconds_bucket"
    assert value(metrics, bucket, model="m", route=ROUTE, le="0.25") == 1
    assert value(metrics, bucket, model="m", route=ROUTE, le="0.5") == 2
    assert value(metrics, bucket, model="m", route=ROUTE, le="1.0") == 3
    assert value(metrics, "lmforge_request_duration_seconds_count", model="m", route=ROUTE) == 3
    total = value(metrics, "lmforge_request_duration_seconds_sum", model="m", route=ROUTE)
    assert total == pytest.approx(1.2)


def test_half_a_second_is_a_bucket_boundary(metrics):
    """The P99 alert's threshold: exactly 0.5 s counts as within it, anything longer does not."""
    metrics.observe_request("m", ROUTE, "ok", 0.5)
    metrics.observe_request("m", ROUTE, "ok", 0.5001)
    assert value(metrics, "lmforge_request_duration_seconds_bucket", model="m", route=ROUTE, le="0.5") == 1


@pytest.mark.parametrize("call", [
    lambda m: m.observe_request("m", ROUTE, "timeout", 1.0),
    lambda m: m.observe_cache("results", "hit"),
    lambda m: m.observe_cache("result", "stale"),
])
def test_a_label_outside_the_vocabulary_is_refused(metrics, call):
    with pytest.raises(ValueError, match="is not one of"):
        call(metrics)
    body, _ = metrics.exposition()
    assert b"lmforge_requests_total{" not in body and b"lmforge_cache_requests_total{" not in body


def test_a_batch_records_its_rows_and_each_request_wait(metrics):
    metrics.observe_batch("m", 3, [0.001, 0.002, 0.004])
    metrics.observe_batch("m", 64)  # a decoding step that admitted no one

    bucket = "lmforge_batch_size_bucket"
    boundaries = {s.labels["le"] for f in text_string_to_metric_families(metrics.exposition()[0].decode())
                  if f.name == "lmforge_batch_size" for s in f.samples if "le" in s.labels}
    assert boundaries == {"1.0", "2.0", "4.0", "8.0", "16.0", "32.0", "64.0", "+Inf"}
    assert value(metrics, bucket, model="m", le="2.0") == 0
    assert value(metrics, bucket, model="m", le="4.0") == 1
    assert value(metrics, bucket, model="m", le="64.0") == 2
    assert value(metrics, "lmforge_batch_size_sum", model="m") == 67
    assert value(metrics, "lmforge_queue_duration_seconds_count", model="m") == 3
    assert value(metrics, "lmforge_queue_duration_seconds_sum", model="m") == pytest.approx(0.007)
    assert value(metrics, "lmforge_queue_duration_seconds_bucket", model="m", le="0.002") == 2


def test_gauges_hold_the_last_value_set(metrics):
    metrics.set_queue("m", 5, 100)
    metrics.set_queue("m", 3, 100)
    metrics.set_running("m", 7)
    metrics.set_running("m", 6)
    assert value(metrics, "lmforge_queue_depth", model="m") == 3
    assert value(metrics, "lmforge_queue_capacity", model="m") == 100
    assert value(metrics, "lmforge_running_sequences", model="m") == 6
    assert value(metrics, "lmforge_ready") == 0
    metrics.set_ready(True)
    assert value(metrics, "lmforge_ready") == 1
    metrics.set_ready(False)
    assert value(metrics, "lmforge_ready") == 0


def test_tokens_accumulate_and_first_token_times_are_a_histogram(metrics):
    metrics.observe_tokens("m", prompt=12, generated=30)
    metrics.observe_tokens("m", prompt=8, generated=2)
    metrics.observe_first_token("m", 0.04)
    assert value(metrics, "lmforge_prompt_tokens_total", model="m") == 20
    assert value(metrics, "lmforge_generated_tokens_total", model="m") == 32
    assert value(metrics, "lmforge_time_to_first_token_seconds_bucket", model="m", le="0.025") == 0
    assert value(metrics, "lmforge_time_to_first_token_seconds_bucket", model="m", le="0.05") == 1


def test_cache_lookups_are_counted_per_cache_and_result(metrics):
    metrics.observe_cache("result", "hit")
    metrics.observe_cache("result", "hit")
    metrics.observe_cache("result", "error")
    metrics.observe_cache("prefix", "miss")
    assert value(metrics, "lmforge_cache_requests_total", cache="result", result="hit") == 2
    assert value(metrics, "lmforge_cache_requests_total", cache="result", result="error") == 1
    assert value(metrics, "lmforge_cache_requests_total", cache="prefix", result="miss") == 1
    assert value(metrics, "lmforge_cache_requests_total", cache="prefix", result="hit") is None


def test_a_reloaded_model_replaces_its_info_series(metrics):
    metrics.set_model("m", "1", "onnx")
    metrics.set_model("n", "7", "torchscript")
    metrics.set_model("m", "2", "torchscript")
    assert value(metrics, "lmforge_model_info", model="m", version="2", runtime="torchscript") == 1
    assert value(metrics, "lmforge_model_info", model="m", version="1", runtime="onnx") is None
    assert value(metrics, "lmforge_model_info", model="n", version="7", runtime="torchscript") == 1


def test_two_servers_keep_separate_counts():
    first, second = ServerMetrics(), ServerMetrics()
    first.observe_request("m", ROUTE, "ok", 0.1)
    first.set_ready(True)
    assert value(first, "lmforge_requests_total", model="m", route=ROUTE, outcome="ok") == 1
    assert value(second, "lmforge_requests_total", model="m", route=ROUTE, outcome="ok") is None
    assert value(second, "lmforge_ready") == 0


def test_the_exposition_parses_and_carries_only_bounded_labels(metrics):
    """Labels are the fixed set below: a new one (a user id, the prompt) must be a deliberate change."""
    metrics.observe_request("m", ROUTE, "cancelled", 0.1)
    metrics.observe_batch("m", 2, [0.01])
    metrics.set_queue("m", 1, 10)
    metrics.observe_tokens("m", 3, 4)
    metrics.observe_first_token("m", 0.2)
    metrics.set_running("m", 1)
    metrics.observe_cache("prefix", "hit")
    metrics.set_model("m", "1", "onnx")
    body, content_type = metrics.exposition()

    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert {
        "lmforge_requests", "lmforge_request_duration_seconds", "lmforge_queue_duration_seconds",
        "lmforge_batch_size", "lmforge_queue_depth", "lmforge_queue_capacity", "lmforge_generated_tokens",
        "lmforge_prompt_tokens", "lmforge_time_to_first_token_seconds", "lmforge_running_sequences",
        "lmforge_cache_requests", "lmforge_model_info", "lmforge_ready",
    } <= families.keys()
    labels = {name for f in families.values() for s in f.samples for name in s.labels}
    assert labels == {"model", "route", "outcome", "le", "cache", "result", "version", "runtime"}
    assert {s.labels.get("outcome") for s in families["lmforge_requests"].samples} == {"cancelled"}
