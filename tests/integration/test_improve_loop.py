"""The improvement loop as a user runs it, every step through the real CLI and a real server:
traffic with feedback -> `improve mine` -> corrections on the review page's API -> `improve
corrections` -> `improve train` (EWC) -> both versions served in an A/B test -> traffic from users
with ratings -> `abtest analyze` -> `abtest promote` -> the winner answers under the old name.

The simulated users rate the new version higher (a known effect), so the analysis must promote it;
the figures themselves are tested in tests/unit/improve."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from processes import free_port
from uvicorn_thread import KEY, Server

from lmforge.records import open_store
from lmforge.serve.assignment import assign
from lmforge.serve.settings import ServeSettings

ADMIN = "loop-admin-key"


@pytest.fixture(scope="module")
def keys():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMFORGE_API_KEYS", KEY)
        patch.setenv("LMFORGE_ADMIN_KEYS", ADMIN)
        patch.setenv("LMFORGE_ADMIN_KEY", ADMIN)
        yield


def settings(records: str, models: dict[str, Path], experiment: bool) -> ServeSettings:
    ab = [{"name": "sst2", "variants": [{"model": "sst2"}, {"model": "sst2-v2"}]}] if experiment else []
    return ServeSettings(models=[{"path": p, "name": n} for n, p in models.items()], port=free_port(),
                         device="cpu", rate_limit=10_000, rate_burst=10_000, records_url=records,
                         review=True, experiments=ab)


def wait_logged(records: str, request_ids: list[str]) -> None:
    """Until the server's background writer has stored these requests."""
    deadline = time.monotonic() + 60
    with open_store(records) as store:
        while any(store.request(i) is None for i in request_ids):
            assert time.monotonic() < deadline, "requests never logged"
            time.sleep(0.02)


def test_feedback_to_review_to_ewc_to_ab_test_to_promotion(classifier_folder, cli, keys, tmp_path):
    base = classifier_folder["model"]
    records = f"sqlite:///{tmp_path / 'records.db'}"
    rows = classifier_folder["train"].read_text().splitlines()[1:201]
    sentences = [line.split("\t")[0] for line in rows]

    # 1. traffic on the served model, some of it disputed by its users
    with Server(settings(records, {"sst2": base}, experiment=False)) as server:
        client = server.client()
        answers = client.post("/v1/classify", json={"model": "sst2", "input": sentences[:64]})
        answers = answers.json()["results"]
        for answer in answers[:5]:
            wrong = "0" if answer["label"] == "1" else "1"
            said = client.post("/v1/feedback", json={"request_id": answer["id"], "label": wrong})
            assert said.status_code == 200
        wait_logged(records, [a["id"] for a in answers])

        # 2. the worst answers into a queue, reviewed through the page's API (the browser test drives it)
        mined = cli("improve", "mine", base, "--records", records, "--share", "0.1", "--queue", "fixes")
        assert mined.exit_code == 0, mined.output
        assert "7 queued of 64 classify requests (5 with negative feedback" in mined.output
        assert client.post("/review/login", json={"key": KEY}).status_code == 204
        reviewed = 0
        while (item := client.get("/review/api/next", params={"queue": "fixes"})).status_code == 200:
            item = item.json()
            label = item["prediction"].get("feedback", {}).get("label", item["prediction"]["label"])
            saved = client.post(f"/review/api/items/{item['id']}/correction",
                                json={"accepted": label == item["prediction"]["label"], "label": label})
            assert saved.status_code == 200, saved.text
            reviewed += 1
        assert reviewed == 7

    # 3. the corrections as training data, and an EWC round on them
    fixes = tmp_path / "fixes.jsonl"
    written = cli("improve", "corrections", "--records", records, "--queue", "fixes", "--out", fixes)
    assert written.exit_code == 0, written.output
    assert len(fixes.read_text().splitlines()) == 7
    improved = tmp_path / "sst2-v2"
    trained = cli("improve", "train", "--base", base, "--data", fixes,
                  "--fisher-data", classifier_folder["train"], "--ewc-lambda", "10", "--out", improved,
                  "--set", "steps=4", "--set", "batch_size=4", "--set", "fisher_samples=32",
                  "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    manifest = json.loads((improved / "manifest.json").read_text())
    assert any(Path(p["path"]).resolve() == base.resolve() for p in manifest["parents"])

    # 4. both versions in an A/B test; users rate the new one higher
    rng = random.Random(0)
    users = [f"user-{i}" for i in range(160)]
    with Server(settings(records, {"sst2": base, "sst2-v2": improved}, experiment=True)) as server:
        client = server.client()
        for user in users:
            variant = assign("sst2", user, [0.5, 0.5])
            for text in rng.sample(sentences, 2):
                answer = client.post("/v1/classify", json={"model": "sst2", "input": text},
                                     headers={"X-User-Id": user}).json()["results"][0]
                rating = 1 if rng.random() < (0.9 if variant == 1 else 0.5) else -1
                assert client.post("/v1/feedback", json={"request_id": answer["id"], "rating": rating}
                                   ).status_code == 200
        report = tmp_path / "ab"
        analysed = cli("abtest", "analyze", "--records", records, "--experiment", "sst2",
                       "--variants", "sst2,sst2-v2", "--out", report)
        assert analysed.exit_code == 0, analysed.output
        decision = json.loads((report / "analysis.json").read_text())
        assert decision["decision"] == "promote sst2-v2", analysed.output
        assert decision["units"] == {"sst2": sum(assign("sst2", u, [.5, .5]) == 0 for u in users),
                                     "sst2-v2": sum(assign("sst2", u, [.5, .5]) == 1 for u in users)}
        assert (report / "analysis.png").stat().st_size > 0

        # 5. promotion: the winner now answers everyone under the old name
        promoted = cli("abtest", "promote", "--experiment", "sst2", "--analysis", report / "analysis.json",
                       "--url", server.url)
        assert promoted.exit_code == 0, promoted.output
        versions = {m["id"]: m["version"] for m in client.get("/v1/models").json()["data"]}
        assert versions["sst2"] == versions["sst2-v2"]
