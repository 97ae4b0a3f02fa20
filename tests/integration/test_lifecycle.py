"""`lmforge run` end to end at the smallest settings (configs/smoke.yaml): every stage's artifact,
the served traffic in the records database, the A/B decision and its promotion, the report in a
real browser, and a run killed mid-pretraining that, started again, ends in the same models.

The figures of so small a run mean nothing; what is tested is that each stage made what the
next one reads, and that the numbers each stage reports agree with its artifacts."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
from browser import check_page
from postgres import postgres_server
from processes import kill_tree, start_in_session
from redis_server import running_redis
from safetensors import safe_open

from lmforge.model.bundle import load_bundle
from lmforge.pipeline import STAGES
from lmforge.records import open_store

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
ARTIFACTS = REPO / "test-artifacts"
WEIGHTS = ("model.safetensors", "heads.safetensors")


def stage_log(run: Path) -> dict[str, dict]:
    return {e["stage"]: e for e in map(json.loads, (run / "logs" / "stages.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def smoke_run(cli, tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("lifecycle")
    result = cli("run", "--config", SMOKE, "--set", f"root={root}", "--set", "device=cpu")
    assert result.exit_code == 0, result.output
    return root / "smoke", result.output


def test_every_stage_leaves_its_artifact(smoke_run):
    run, output = smoke_run
    log = stage_log(run)
    assert list(log) == [s.name for s in STAGES]
    for entry in log.values():
        for path in entry["artifacts"].values():
            assert (run / path / "manifest.json").is_file(), f"{entry['stage']}: {path} is not complete"
        assert entry["figure"] in output  # the progress line printed the stage's key figure
    classify = load_bundle(run / log["finetune"]["artifacts"]["classify"])
    assert classify.spec["classify"]["labels"] == ["finance", "health", "sports", "tech"]
    comparison = log["finetune"]["figures"]["comparison"]
    assert [(c["task"], c["examples"]) for c in comparison] == [("classify", 32), ("classify", 80),
                                                                 ("ner", 32), ("ner", 80)]
    for c in comparison:  # each figure is the test score its model folder recorded
        name = f"smoke-{c['task']}" + ("-32" if c["examples"] == 32 else "")
        metrics = json.loads((run / "models" / name / "metrics.json").read_text())
        assert metrics["test"][c["metric"]] == c["pretrained"]
    multitask = json.loads((run / log["multitask"]["artifacts"]["model"] / "heads.json").read_text())
    assert set(multitask["heads"]) >= {"classify", "ner", "embed"}
    compression = json.loads((run / "compression" / "report.json").read_text())
    assert [row["name"] for row in compression] == ["smoke-classify", "smoke-classify/onnx-int8",
                                                    "smoke-classify-distilled", "smoke-classify-ffn50"]
    assert (run / log["export"]["artifacts"]["onnx"] / "model.onnx").is_file()
    assert (run / log["export"]["artifacts"]["triton"] / "smoke-classify" / "config.pbtxt").is_file()


def test_served_traffic_feedback_and_corrections_are_in_the_records(smoke_run):
    run, _ = smoke_run
    log = stage_log(run)
    serving = json.loads((run / log["serve"]["artifacts"]["serving"] / "metrics.json").read_text())
    assert serving["requests"] == 60 and serving["errors"] == 0 and len(serving["latencies_ms"]) == 60
    with open_store(run / "records" / "records.db") as store:
        served = store.requests(model="classify")
        assert len([r for r in served if r.experiment is None]) == 60
        rated = store.feedback([r.id for r in served if r.experiment is None])
        assert sum(f.rating == -1 for f in rated) == serving["feedback"]["negative"]
        corrections = store.corrections(queue="smoke-worst")
    review = log["review"]["figures"]
    # 10% of 60, or every text with negative feedback if there are more
    assert review["mined"] == len(corrections) >= 6
    assert review["negative_feedback"] <= serving["feedback"]["negative"]
    lines = (run / log["review"]["artifacts"]["corrections"] / "corrections.jsonl").read_text().splitlines()
    assert len(lines) == review["mined"]
    truth = {json.loads(line)["request_id"]: json.loads(line)["label"]
             for line in (run / "serving" / "truth.jsonl").read_text().splitlines()}
    for item, correction in corrections:  # the simulated reviewer answered with the truth of each request
        assert correction.label == truth[item.request_id]
    v2 = json.loads((run / log["ewc"]["artifacts"]["model"] / "manifest.json").read_text())
    assert any(Path(p["path"]).name == "corrections.jsonl" for p in v2["parents"])


def test_ab_decision_and_promotion_agree(smoke_run):
    run, _ = smoke_run
    folder = run / stage_log(run)["abtest"]["artifacts"]["abtest"]
    analysis = json.loads((folder / "analysis.json").read_text())
    promotion = json.loads((folder / "promotion.json").read_text())
    assert sum(analysis["units"].values()) == 20 and set(analysis["units"]) == {"classify", "classify-v2"}
    assert promotion["promoted"] == analysis["decision"].startswith("promote ")


def test_report_opens_in_a_browser(smoke_run):
    run, output = smoke_run
    page = run / "report" / "index.html"
    assert f"report: {page}" in output
    html = page.read_text()
    assert "could not show" not in html and "not run yet" not in html
    for section in ("Data funnel", "Pretraining", "Fine-tuning", "Compression", "Serving", "A/B test",
                    "Lineage"):
        assert section in html
    check_page(page, ARTIFACTS / "lifecycle_report.png")


def test_a_killed_run_resumes_to_the_same_models(smoke_run, cli, tmp_path):
    """SIGKILL while pretraining (after its first checkpoint), then the same command again: every
    model folder holds the same weights as the uninterrupted run's. This run logs to a real
    PostgreSQL and caches answers in a real Redis (the reference used a SQLite file and the
    in-process cache), so it also shows that those services serve the lifecycle unchanged."""
    reference, _ = smoke_run
    with postgres_server() as records, running_redis(tmp_path / "redis") as redis:
        run = killed_and_resumed(cli, tmp_path, records, redis.url)
        with open_store(records) as store:
            served = store.requests(model="classify")
            assert len([r for r in served if r.experiment is None]) == 60
            assert len(store.corrections(queue="smoke-worst")) == stage_log(run)["review"]["figures"]["mined"]
    assert not (run / "records" / "records.db").exists()
    for model in sorted((reference / "models").iterdir()):  # (INT8 is an ONNX export: not compared)
        for name in WEIGHTS:
            if (model / name).is_file():
                assert_same_weights(model / name, run / "models" / model.name / name)


def killed_and_resumed(cli, tmp_path: Path, records: str, redis: str) -> Path:
    args = ["run", "--config", str(SMOKE), "--set", f"root={tmp_path}", "--set", "device=cpu",
            "--set", f"serve.records_url={records}", "--set", f"serve.redis_url={redis}"]
    threads = str(torch.get_num_threads())  # as the reference run had: sums in the same order
    process = start_in_session([sys.executable, "-m", "lmforge", *args], cwd=tmp_path,
                               env={**os.environ, "OMP_NUM_THREADS": threads})
    checkpoint = tmp_path / "smoke" / "checkpoints" / "smoke" / "step_000010"
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.is_dir() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        kill_tree(process)
    assert checkpoint.is_dir(), "the run never wrote its first pretraining checkpoint"
    run = tmp_path / "smoke"
    assert "pretrain" not in stage_log(run)
    resumed = cli(*args)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output
    return run


def assert_same_weights(expected: Path, actual: Path) -> None:
    """Tensor by tensor, and the metadata: safetensors writes its metadata map in a random order, so
    two files of the same weights may differ in bytes."""
    with safe_open(str(expected), "pt") as a, safe_open(str(actual), "pt") as b:
        assert a.metadata() == b.metadata() and set(a.keys()) == set(b.keys()), expected
        for key in a.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), f"{expected}: {key}"
