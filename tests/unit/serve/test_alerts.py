"""The shipped Prometheus config and alert rules (deploy/prometheus): the real promtool checks them and
runs their unit tests, those tests fail when a threshold or `for` is planted wrong, and every metric
the rules read is one the server exposes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from processes import run_bounded
from prometheus_client.parser import text_string_to_metric_families

from lmforge.serve.metrics import ServerMetrics

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("LMFORGE_SKIP_PROMTOOL"):
            pytest.skip("promtool not on PATH and LMFORGE_SKIP_PROMTOOL is set")
        pytest.fail("promtool not found on PATH: install Debian's prometheus package (`make services`), "
                    "or set LMFORGE_SKIP_PROMTOOL=1 to skip these tests", pytrace=False)
    return path


def run_promtool(promtool: str, *args: str, folder: Path) -> subprocess.CompletedProcess:
    return run_bounded([promtool, *args], timeout=60, capture_output=True, text=True, cwd=folder)


@pytest.mark.parametrize("args", [
    ("check", "config", "prometheus.yml"),
    ("check", "rules", "alerts.yml"),
    ("test", "rules", "alerts_test.yml"),
])
def test_promtool_accepts_the_config_and_the_rules_pass_their_tests(promtool, args, tmp_path):
    folder = tmp_path / "prometheus"
    shutil.copytree(DEPLOY, folder)
    (folder / "lmforge-metrics.key").write_text("a-key\n")  # the API key the deployment puts there
    result = run_promtool(promtool, *args, folder=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# (rule, field, text in that field, planted text, what promtool's failure names)
PLANTED = [
    ("LmforgeHighP99Latency", "expr", "> 0.5", "> 0.05", "alertname: LmforgeHighP99Latency,"),
    ("LmforgeHighP99Latency", "expr", "> 0.5", "> 0.45", "alertname: LmforgeHighP99Latency,"),
    ("LmforgeHighP99Latency", "expr", "> 0.5", "> 0.6", "alertname: LmforgeHighP99Latency,"),
    ("LmforgeHighP99Latency", "for", "5m", "0m", "alertname: LmforgeHighP99Latency,"),
    ("LmforgeHighP99Latency", "for", "5m", "6m", "alertname: LmforgeHighP99Latency,"),
    ("model:lmforge_request_duration_seconds:p99_5m", "expr", "0.99", "0.9", "p99_5m, 0.0001)"),
    ("model:lmforge_request_duration_seconds:p99_5m", "expr", "(le, model)", "(le, model, route)",
     "p99_5m, 0.0001)"),
    ("LmforgeHighErrorRate", "expr", "> 0.01", "> 0.008", "alertname: LmforgeHighErrorRate,"),
    ("LmforgeHighErrorRate", "expr", "> 0.01", "> 0.011", "alertname: LmforgeHighErrorRate,"),
    ("LmforgeHighErrorRate", "expr", '{outcome="error"}', '{outcome=~"error|rejected"}',
     "alertname: LmforgeHighErrorRate,"),
    ("LmforgeHighErrorRate", "for", "5m", "4m", "alertname: LmforgeHighErrorRate,"),
    ("LmforgeQueueSaturated", "expr", "> 0.9", ">= 0.9", "alertname: LmforgeQueueSaturated,"),
    ("LmforgeQueueSaturated", "expr", "> 0.9", "> 0.93", "alertname: LmforgeQueueSaturated,"),
    ("LmforgeQueueSaturated", "expr", "(lmforge_queue_capacity > 0)", "lmforge_queue_capacity",
     "alertname: LmforgeQueueSaturated,"),
    ("LmforgeQueueSaturated", "for", "2m", "1m", "alertname: LmforgeQueueSaturated,"),
    ("LmforgeDown", "expr", 'up{job="lmforge"}', "up", "alertname: LmforgeDown,"),
    ("LmforgeDown", "expr", " or lmforge_ready == 0", "", "alertname: LmforgeDown,"),
    ("LmforgeDown", "for", "1m", "0m", "alertname: LmforgeDown,"),
]


def plant(folder: Path, rule: str, field: str, old: str, new: str) -> None:
    """Copy the rules and their tests into `folder`, with `old` replaced by `new` in one rule's field."""
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    [target] = [r for g in rules["groups"] for r in g["rules"] if rule in (r.get("alert"), r.get("record"))]
    assert str(target[field]).count(old) == 1, f"{old!r} not once in {rule}'s {field}"
    target[field] = str(target[field]).replace(old, new)
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(DEPLOY / "alerts_test.yml", folder)


def test_the_copy_the_plantings_edit_passes_unchanged(promtool, tmp_path):
    """So that a failure below comes from the planted text, not from rewriting the file."""
    plant(tmp_path, "LmforgeDown", "for", "1m", "1m")
    result = run_promtool(promtool, "test", "rules", "alerts_test.yml", folder=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("rule", "field", "old", "new", "failure"), PLANTED,
                         ids=[f"{p[0]}-{p[1]}:{p[3] or 'removed'}" for p in PLANTED])
def test_a_wrong_threshold_or_period_fails_the_rule_tests(promtool, tmp_path, rule, field, old, new, failure):
    plant(tmp_path, rule, field, old, new)
    result = run_promtool(promtool, "test", "rules", "alerts_test.yml", folder=tmp_path)
    assert result.returncode != 0, f"the rule tests still pass with {rule}'s {field} {old!r} -> {new!r}"
    assert failure in result.stderr, result.stdout + result.stderr  # failed cases, not a broken file


def referenced_metrics() -> set[str]:
    """The metric names the rules' expressions read; recorded names (`level:metric:ops`) have colons."""
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    words = {w for expr in exprs for w in re.findall(r"[A-Za-z_:][\w:]*", expr)}
    return {w for w in words if re.fullmatch(r"lmforge_[a-z0-9_]+", w)}


def test_every_metric_the_rules_read_is_exposed():
    """Renaming a metric without updating the rules would leave an alert that can never fire."""
    metrics = ServerMetrics()
    metrics.observe_request("m", "/v1/completions", "error", 0.1)
    metrics.observe_batch("m", 2, [0.01])
    metrics.set_queue("m", 1, 10)
    metrics.observe_tokens("m", 3, 4)
    metrics.observe_first_token("m", 0.2)
    metrics.set_running("m", 1)
    metrics.observe_cache("result", "hit")
    metrics.set_model("m", "1", "onnx")
    metrics.set_ready(True)
    body, _ = metrics.exposition()
    exposed = {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    referenced = referenced_metrics()
    assert {"lmforge_request_duration_seconds_bucket", "lmforge_requests_total", "lmforge_queue_depth",
            "lmforge_queue_capacity", "lmforge_ready"} <= referenced
    assert referenced <= exposed, f"the rules read metrics the server does not expose: {referenced - exposed}"
