"""The server over real HTTP: uvicorn on 127.0.0.1, the real `openai` and `tritonclient.http` clients,
and answers compared with the model run directly (an independent path: the bundle loader and
`generate`, not the server's batchers)."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import torch
from processes import free_port
from uvicorn_thread import KEY, Server

from lmforge.data.tasks import read_conll, read_text_labels
from lmforge.model.bundle import load_bundle
from lmforge.model.generate import generate
from lmforge.serve.settings import ServeSettings
from lmforge.train.finetune_config import MultitaskConfig, TaskSettings
from lmforge.train.multitask import multitask

http = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (the dev extra)")
ADMIN = "test-admin-key"


@pytest.fixture(scope="module")
def heads_folder(lm_folder, shared_data, tmp_path_factory) -> Path:
    """The tiny LM with a classify (BANKING77), an NER (WNUT-17) and an embed head, briefly trained."""
    root = tmp_path_factory.mktemp("serve-tasks")
    banking = read_text_labels(shared_data / "banking77/train.csv", "text", "category")
    random.Random(0).shuffle(banking)
    rows = "".join(f"{e.text}\t{e.label}\n" for e in banking[:400])
    (root / "intent.tsv").write_text("text\tlabel\n" + rows)
    wnut = read_conll(shared_data / "wnut17/wnut17train.conll")[:200]
    (root / "entities.conll").write_text("".join(
        "".join(f"{w}\t{t}\n" for w, t in zip(e.tokens, e.tags, strict=True)) + "\n" for e in wnut))
    tasks = [TaskSettings(task="classify", head="intent", data={"train": root / "intent.tsv"}),
             TaskSettings(task="ner", head="entities", data={"train": root / "entities.conll"}),
             TaskSettings(task="embed", head="vectors", dim=16, data={"train": root / "intent.tsv"})]
    cfg = MultitaskConfig(model=lm_folder, tasks=tasks, steps=10, batch_size=8, max_len=32, eval_every=10,
                          log_every=10, out=root / "model")
    return multitask(cfg, resume=None).model_dir


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMFORGE_API_KEYS", KEY)
        patch.setenv("LMFORGE_ADMIN_KEYS", ADMIN)
        yield patch


@pytest.fixture(scope="module")
def server(heads_folder, monkeypatch_module) -> Server:
    settings = ServeSettings(models=[{"path": heads_folder, "name": "m"}], port=free_port(), device="cpu",
                             rate_limit=1000, rate_burst=1000)
    with Server(settings) as running:
        yield running


def test_health_needs_no_key_and_everything_else_does(server):
    anonymous = server.client(key=None)
    assert anonymous.get("/v2/health/live").json() == {"live": True}
    assert anonymous.get("/v2/health/ready").json() == {"ready": True}
    for path in ("/v1/models", "/metrics", "/v2/models/m"):
        response = anonymous.get(path)
        assert response.status_code == 401, path
    wrong = server.client(key="not-a-key").get("/v1/models")
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    assert server.client().get("/v1/models").json()["data"][0]["id"] == "m"


def test_classify_ner_and_embeddings_equal_the_model_run_directly(server, heads_folder):
    texts = ["I lost my card yesterday", "how do I top up with apple pay?", "Pizza in Paris with John"]
    bundle = load_bundle(heads_folder, "cpu")
    client = server.client()

    served = client.post("/v1/classify", json={"model": "m", "input": texts}).json()["results"]
    for text, result in zip(texts, served, strict=True):
        ids = bundle.tokenizer.encode(text).ids[:32]
        with torch.no_grad():
            logits = bundle.task_model("intent")("intent", torch.tensor([ids]))[1][0]
        labels = bundle.head("intent")["labels"]
        assert result["label"] == labels[int(logits.argmax())]
        assert result["scores"][result["label"]] == pytest.approx(float(logits.softmax(-1).max()), abs=1e-5)

    entities = client.post("/v1/ner", json={"model": "m", "input": texts}).json()["results"]
    for text, result in zip(texts, entities, strict=True):
        for entity in result["entities"]:
            assert text[entity["start"]:entity["end"]] == entity["text"] and entity["label"]

    vectors = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY).embeddings.create(model="m",
                                                                                       input=texts)
    matrix = np.array([item.embedding for item in vectors.data])
    assert matrix.shape == (3, 16) and np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-4)


def test_openai_completions_equal_generate_and_stream_the_same_text(server, heads_folder):
    bundle = load_bundle(heads_folder, "cpu")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY)
    prompt = "The bank said that"
    expected_ids = generate(bundle.model, bundle.tokenizer.encode(prompt).ids, 12, temperature=0)
    done = client.completions.create(model="m", prompt=prompt, max_tokens=12, temperature=0)
    assert done.choices[0].text == bundle.tokenizer.decode(expected_ids)
    assert done.usage.completion_tokens == len(expected_ids)
    streamed = "".join(chunk.choices[0].text for chunk in client.completions.create(
        model="m", prompt=prompt, max_tokens=12, temperature=0, stream=True))
    assert streamed == done.choices[0].text

    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=8, temperature=0)
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0, stream=True)]
    assert "".join(parts) == chat.choices[0].message.content


def test_tritonclient_speaks_kserve_v2_to_the_server(server):
    client = http.InferenceServerClient(server.url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {KEY}"}
    assert client.is_server_live() and client.is_model_ready("m", headers=headers)
    with pytest.raises(Exception, match="API key"):
        client.get_model_metadata("m")
    outputs = client.get_model_metadata("m", headers=headers)["outputs"]
    assert {o["name"] for o in outputs} >= {"label", "scores"}
    text = http.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"card not working", b"exchange rate please"], dtype=object))
    result = client.infer("m", [text], headers=headers, parameters={"task": "classify"})
    native = server.client().post("/v1/classify", json={"model": "m", "input": ["card not working",
                                                                               "exchange rate please"]})
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    assert labels == [r["label"] for r in native.json()["results"]]


def test_bad_requests_get_4xx_in_their_protocol_shape(server):
    client = server.client()
    missing = client.post("/v2/models/nope/infer", json={"inputs": [{"name": "text", "shape": [1],
                                                                     "datatype": "BYTES", "data": ["x"]}]})
    assert missing.status_code == 404 and "no model named 'nope'" in missing.json()["error"]
    wrong_type = client.post("/v2/models/m/infer", json={"parameters": {"task": "classify"}, "inputs": [
        {"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    assert wrong_type.status_code == 400 and "BYTES" in wrong_type.json()["error"]
    too_many = client.post("/v1/completions", json={"model": "m", "prompt": "x", "max_tokens": 10_000})
    assert too_many.status_code == 400 and "max_tokens" in too_many.json()["error"]["message"]
    not_json = client.post("/v1/classify", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and "error" in not_json.json()


def answers(response: dict) -> list[dict]:
    """A classify response's results without their ids (each request gets its own)."""
    return [{k: v for k, v in result.items() if k != "id"} for result in response["results"]]


def test_a_repeated_request_is_answered_from_the_cache(server):
    client = server.client()

    def hits() -> float:
        lines = client.get("/metrics").text.splitlines()
        hit = 'lmforge_cache_requests_total{cache="result",result="hit"}'
        found = [line for line in lines if line.startswith(hit)]
        return float(found[0].split()[-1]) if found else 0.0

    body = {"model": "m", "input": ["please cancel my transfer"]}
    first = client.post("/v1/classify", json=body).json()
    before = hits()
    again = client.post("/v1/classify", json=body).json()
    assert answers(again) == answers(first) and again["results"][0]["id"] != first["results"][0]["id"]
    assert hits() == before + 1


def test_the_live_metrics_pass_promtool_and_count_requests_by_route(server, tmp_path):
    import shutil
    import subprocess

    client = server.client()
    client.post("/v1/classify", json={"model": "m", "input": "where is my card"})
    text = client.get("/metrics").text
    assert 'lmforge_requests_total{model="m",outcome="ok",route="/v1/classify"}' in text
    assert 'lmforge_request_duration_seconds_bucket{le="0.5",model="m",route="/v1/classify"}' in text
    assert "lmforge_ready 1.0" in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install Debian's prometheus package (make services)"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_malformed_requests_never_get_a_5xx(server):
    """Schemathesis generates requests from our OpenAPI schema, valid and invalid: no answer is a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    spec = server.client().get("/openapi.json").json()
    # Name the served model wherever one goes, so requests get past the model lookup (a 404).
    for component in spec["components"]["schemas"].values():
        if "model" in component.get("properties", {}):
            component["properties"]["model"] = {"type": "string", "enum": ["m"]}
    for path in spec["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "name":
                    parameter["schema"] = {"type": "string", "enum": ["m"]}
    schema = schemathesis.openapi.from_dict(spec)
    auth = {"Authorization": f"Bearer {KEY}"}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith("/admin"):
            continue

        @settings(max_examples=15, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy())
        def call(case) -> None:
            response = case.call(base_url=server.url, headers=auth, timeout=60)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} "
                                f"{response.text[:200]}")

        call()
    assert not failures, failures[:5]


def small_server(folder: Path, **overrides) -> Server:
    settings = {"models": [{"path": folder, "name": "m"}], "port": free_port(), "device": "cpu",
                "rate_limit": 1000, "rate_burst": 1000, **overrides}
    return Server(ServeSettings.model_validate(settings))


def metric(client: httpx.Client, prefix: str) -> float:
    found = [line for line in client.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return float(found[0].split()[-1]) if found else 0.0


def test_rate_limit_429_and_full_queue_503_carry_retry_after(heads_folder, monkeypatch_module):
    with small_server(heads_folder, rate_limit=0.01, rate_burst=2, max_running=1, max_waiting=0) as s:
        client = s.client()
        assert [client.get("/v1/models").status_code for _ in range(2)] == [200, 200]
        limited = client.get("/v1/models")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["type"] == "rate_limit_error"
    with small_server(heads_folder, max_running=1, max_waiting=1) as s:
        body = {"model": "m", "prompt": "hello", "max_tokens": 512, "temperature": 0}

        def complete(_: int) -> httpx.Response:
            with s.client() as own:
                return own.post("/v1/completions", json=body)

        with ThreadPoolExecutor(3) as pool, s.client() as watcher:
            running = pool.submit(complete, 0)
            for _ in range(1200):  # it runs before the others come (sent together, two may find it waiting)
                if metric(watcher, 'lmforge_running_sequences{model="m"}') == 1:
                    break
                time.sleep(0.05)
            answers = [running, *(pool.submit(complete, i) for i in (1, 2))]  # one waits, one finds it full
            answers = [a.result() for a in answers]
        assert sorted(a.status_code for a in answers) == [200, 200, 503]
        refused = next(a for a in answers if a.status_code == 503)
        assert refused.headers["retry-after"] == "1" and "error" in refused.json()


def test_a_client_that_disconnects_frees_its_generation_slot(heads_folder, monkeypatch_module):
    with small_server(heads_folder, max_running=1, max_tokens=512) as s, s.client() as client:
        body = {"model": "m", "prompt": "tell me", "max_tokens": 512, "temperature": 0, "stream": True}
        with client.stream("POST", "/v1/completions", json=body) as response:
            next(response.iter_lines())  # the first chunk, then hang up
        for _ in range(600):
            if metric(client, 'lmforge_running_sequences{model="m"}') == 0:
                break
            time.sleep(0.05)
        assert metric(client, 'lmforge_running_sequences{model="m"}') == 0
        assert metric(client, 'lmforge_generated_tokens_total{model="m"}') < 512  # stopped early
        quick = client.post("/v1/completions", json={"model": "m", "prompt": "hi", "max_tokens": 3})
        assert quick.status_code == 200


def test_hot_swap_fails_no_request_and_needs_an_admin_key(heads_folder, tmp_path, monkeypatch_module):
    import json
    import shutil

    newer = tmp_path / "newer"
    shutil.copytree(heads_folder, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "note": "version 2"}))
    with small_server(heads_folder) as s, s.client() as client:
        before = client.get("/v1/models").json()["data"][0]["version"]
        forbidden = client.post("/admin/models/m/load", json={"path": str(newer)})
        assert forbidden.status_code == 403

        def hammer(i: int) -> list[int]:
            with s.client() as own:
                return [own.post("/v1/classify", json={"model": "m", "input": f"card {i} {j}"}).status_code
                        for j in range(15)]

        with ThreadPoolExecutor(4) as pool:
            admin = s.client(ADMIN)
            load = pool.submit(lambda: admin.post("/admin/models/m/load", json={"path": str(newer)}))
            codes = [code for batch in pool.map(hammer, range(4)) for code in batch]
        assert load.result().status_code == 200
        assert codes == [200] * 60
        after = client.get("/v1/models").json()["data"][0]["version"]
        assert after != before and after == load.result().json()["version"]


def test_redis_result_cache_survives_redis_going_away(heads_folder, redis_server, monkeypatch_module):
    with small_server(heads_folder, redis_url=redis_server.url) as s, s.client() as client:
        body = {"model": "m", "input": ["what is my balance"]}
        first = answers(client.post("/v1/classify", json=body).json())
        assert answers(client.post("/v1/classify", json=body).json()) == first
        assert metric(client, 'lmforge_cache_requests_total{cache="result",result="hit"}') == 1
        assert any(key.startswith(b"lmforge:m:") for key in redis_server.client().keys("*"))
        with redis_server.down():
            assert answers(client.post("/v1/classify", json=body).json()) == first  # served without the cache
            assert metric(client, 'lmforge_cache_requests_total{cache="result",result="error"}') >= 1


def test_request_text_is_logged_only_when_asked_and_then_anonymised(heads_folder, monkeypatch_module, caplog):
    text = "mail anna.schmidt@example.org or call +49 30 1234567 about card 4111 1111 1111 1111"
    for log_requests in (False, True):
        caplog.clear()
        with small_server(heads_folder, log_requests=log_requests) as s, s.client() as client, \
                caplog.at_level("INFO", logger="lmforge.serve"):
            assert client.post("/v1/classify", json={"model": "m", "input": text}).status_code == 200
        lines = [r.getMessage() for r in caplog.records if r.name == "lmforge.serve"]
        assert any("/v1/classify 200" in line for line in lines)
        logged = "\n".join(lines)
        assert KEY not in logged and "anna.schmidt" not in logged and "4111" not in logged
        assert ("card" in logged) is log_requests  # the rest of the text, only when asked


def test_kserve_timeout_and_priority_parameters_are_checked(server):
    client = server.client()
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    for bad in ({"priority": -1}, {"timeout": "soon"}, {"priority": True}):
        response = client.post("/v2/models/m/infer", json={**body, "parameters": {"task": "classify", **bad}})
        assert response.status_code == 400, bad
    ok = client.post("/v2/models/m/infer", json={**body, "parameters": {"task": "classify", "priority": 1,
                                                                      "timeout": 10_000_000}})
    assert ok.status_code == 200


def test_a_chat_follow_up_hits_the_prefix_cache_and_answers_as_without_it(heads_folder, monkeypatch_module):
    turns = [{"role": "user", "content": "I would like to know why my card payment was declined at the shop"}]
    answers = {}
    for cache_bytes in (0, 1 << 24):
        with small_server(heads_folder, prefix_cache_bytes=cache_bytes) as s, s.client() as client:
            client.post("/v1/chat/completions", json={"model": "m", "messages": turns, "max_tokens": 4,
                                                      "temperature": 0})
            follow_up = [*turns, {"role": "assistant", "content": "Let me check."},
                         {"role": "user", "content": "It was yesterday, in the afternoon, for groceries."}]
            answer = client.post("/v1/chat/completions", json={"model": "m", "messages": follow_up,
                                                               "max_tokens": 6, "temperature": 0})
            answers[cache_bytes] = answer.json()["choices"][0]["message"]["content"]
            hits = metric(client, 'lmforge_cache_requests_total{cache="prefix",result="hit"}')
            assert (hits >= 1) is (cache_bytes > 0)
    assert answers[0] == answers[1 << 24]


def test_sigterm_drains_the_requests_in_flight(heads_folder, tmp_path):
    """`lmforge serve` as a user starts it; SIGTERM while requests wait: every one is answered."""
    import os
    import signal
    import subprocess
    import sys

    from processes import kill_tree, start_in_session

    port = free_port()
    command = [sys.executable, "-m", "lmforge", "serve", str(heads_folder), "--port", str(port),
               "--device", "cpu", "--set", "batcher.max_queue_delay_microseconds=6000000"]  # batches wait 6 s
    env = {**os.environ, "LMFORGE_API_KEYS": KEY, "OMP_NUM_THREADS": "1"}
    server = start_in_session(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while server.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        if server.poll() is not None or time.monotonic() >= deadline:  # say why, not a refused connection
            kill_tree(server)
            pytest.fail(f"`lmforge serve` never became ready:\n{server.communicate()[0][-3000:]}")
        name = heads_folder.name

        def classify(i: int) -> int:
            body = {"model": name, "input": f"my card {i} was declined"}
            return httpx.post(f"{url}/v1/classify", json=body, timeout=60,
                              headers={"Authorization": f"Bearer {KEY}"}).status_code

        with ThreadPoolExecutor(8) as pool:
            answers = [pool.submit(classify, i) for i in range(8)]
            # The requests reach the queue, where they wait 6 s for their batch; 3 s leaves room for
            # eight connections on a loaded machine (at 1 s, CI once saw some refused: SIGTERM came
            # before they connected, and a draining server takes no new connections).
            time.sleep(3)
            server.send_signal(signal.SIGTERM)
            codes = [answer.result() for answer in answers]
        assert codes == [200] * 8
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it drained on
    finally:
        kill_tree(server)
        server.communicate()
