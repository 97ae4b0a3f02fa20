"""What the server does for the improvement loop, over real HTTP: every answer logged with its PII
anonymised (the database is scanned for what was planted: SQLite and a real PostgreSQL), feedback
checked against the log, A/B assignment by GrowthBook's hash (checked against an independent port
of it written here), and promotion of a variant by hot swap."""

from __future__ import annotations

import json
import shutil
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from postgres import postgres_server
from processes import free_port
from uvicorn_thread import KEY, Server

from lmforge.records import Feedback, RequestLog, open_store, utcnow
from lmforge.serve.request_log import move_entities
from lmforge.serve.settings import ServeSettings

ADMIN = "test-admin-key"
EMAIL, PHONE, CARD = "jane.doe@example.com", "+44 20 7946 0958", "4111 1111 1111 1111"
PLANTED = [f"write to {EMAIL} about the film", f"call me on {PHONE}, the plot was dull",
           f"my card {CARD} was charged twice for this awful movie"]


def gb_hash_v2(seed: str, value: str) -> float:
    """GrowthBook's v2 hash, written independently of lmforge.serve.assignment (the reference note's
    port: FNV-1a 32 over UTF-16 code units, applied twice)."""
    def fnv(s: str) -> int:
        h, data = 0x811C9DC5, s.encode("utf-16-le")
        for i in range(0, len(data), 2):
            h = ((h ^ (data[i] | data[i + 1] << 8)) * 0x01000193) & 0xFFFFFFFF
        return h
    return (fnv(str(fnv(seed + value))) % 10000) / 10000


@pytest.fixture(scope="module")
def variants(classifier_folder, tmp_path_factory) -> dict[str, Path]:
    """The SST-2 classifier as the control `a`, and a copy as the treatment `b` (another version:
    its manifest differs by a note)."""
    root = tmp_path_factory.mktemp("variants")
    b = root / "b"
    shutil.copytree(classifier_folder["model"], b)
    manifest = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**manifest, "note": "treatment"}))
    return {"a": classifier_folder["model"], "b": b}


@pytest.fixture(scope="module")
def keys():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMFORGE_API_KEYS", KEY)
        patch.setenv("LMFORGE_ADMIN_KEYS", ADMIN)
        patch.setenv("LMFORGE_USER_SALT", "test-salt")
        yield


def settings(variants: dict[str, Path], records: str, experiment: bool = True) -> ServeSettings:
    models = [{"path": path, "name": name} for name, path in variants.items()]
    experiments = [{"name": "a", "variants": [{"model": "a", "weight": 1}, {"model": "b", "weight": 1}]}]
    return ServeSettings(models=models, port=free_port(), device="cpu", rate_limit=1000, rate_burst=1000,
                         records_url=records, experiments=experiments if experiment else [])


@pytest.fixture(scope="module")
def server(variants, keys, tmp_path_factory):
    records = f"sqlite:///{tmp_path_factory.mktemp('records') / 'records.db'}"
    with Server(settings(variants, records)) as running:
        running.records = records
        yield running


def logged(server, request_id: str):
    """The request's log entry, once the server's background writer has stored it."""
    deadline = time.monotonic() + 30
    with open_store(server.records) as store:
        while (entry := store.request(request_id)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
    assert entry is not None, f"{request_id} was never logged"
    return entry


def test_every_answer_is_logged_with_an_id_clients_quote_in_feedback(server):
    client = server.client()
    response = client.post("/v1/classify", json={"model": "a", "input": ["a fine film", "a dull film"]})
    results = response.json()["results"]
    base = response.headers["x-request-id"]
    assert [r["id"] for r in results] == [f"{base}-0", f"{base}-1"]
    good = client.post("/v1/feedback", json={"request_id": results[1]["id"], "rating": -1, "label": "0"})
    assert good.status_code == 200, good.text
    entry = logged(server, results[1]["id"])
    assert entry.input_text == "a dull film" and entry.output["label"] == results[1]["label"]
    assert entry.confidence == pytest.approx(results[1]["score"]) and entry.model == "a"
    with open_store(server.records) as store:
        (said,) = store.feedback([results[1]["id"]])
    assert said.rating == -1 and said.label == "0" and said.author is not None


def test_feedback_on_nothing_logged_or_outside_the_text_is_refused_and_not_stored(server):
    client = server.client()
    unknown = client.post("/v1/feedback", json={"request_id": "no-such-request", "rating": 1})
    assert unknown.status_code == 404 and "no-such-request" in unknown.json()["error"]["message"]
    answer = client.post("/v1/classify", json={"model": "a", "input": "short"}).json()["results"][0]
    outside = client.post("/v1/feedback", json={"request_id": answer["id"],
                                                "correction": [{"start": 2, "end": 40, "label": "PER"}]})
    assert outside.status_code == 400 and "outside the text" in outside.json()["error"]["message"]
    empty = client.post("/v1/feedback", json={"request_id": answer["id"]})
    assert empty.status_code == 422
    with open_store(server.records) as store:
        assert store.feedback([answer["id"]]) == []


def test_users_get_growthbooks_variant_every_time_and_anonymous_users_the_control(server):
    client = server.client()
    users = [f"user-{i}" for i in range(40)]
    for _ in range(2):  # sticky: the second round must agree with the first
        for user in users:
            response = client.post("/v1/classify", json={"model": "a", "input": "ok"},
                                   headers={"X-User-Id": user})
            entry = logged(server, response.json()["results"][0]["id"])
            expected = "a" if gb_hash_v2("a", user) < 0.5 else "b"
            assert (entry.experiment, entry.variant, entry.model) == ("a", expected, expected)
            assert entry.user is not None and user not in entry.user
    anonymous = client.post("/v1/classify", json={"model": "a", "input": "ok"})
    entry = logged(server, anonymous.json()["results"][0]["id"])
    assert (entry.experiment, entry.variant, entry.model) == (None, None, "a")


def test_ner_entities_are_moved_onto_the_anonymised_text():
    text = f"Mail {EMAIL} or Anna in Paris, call {PHONE} from Berlin"
    entities = [{"start": text.index(word), "end": text.index(word) + len(word), "label": "LOC", "text": word}
                for word in ("Anna", "Paris", "Berlin")]
    entities.append({"start": 5, "end": 9, "label": "PER", "text": "jane"})  # overlaps the e-mail: dropped
    from lmforge.serve.request_log import anonymise

    clean, pii = anonymise(text)
    moved = move_entities(text, pii, entities)
    assert [clean[e["start"]:e["end"]] for e in moved] == ["Anna", "Paris", "Berlin"]
    assert EMAIL not in clean and PHONE not in clean and all("text" not in e for e in moved)


def scan_sqlite(url: str) -> str:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        tables = [row[0] for row in
                  connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")]
        dump = [repr(list(connection.exec_driver_sql(f'SELECT * FROM "{t}"'))) for t in tables]
    engine.dispose()
    return "\n".join(dump)


def scan_postgres(url: str) -> str:
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "\n".join(repr(connection.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)


def plant_pii(server) -> None:
    client = server.client()
    answers = client.post("/v1/classify", json={"model": "a", "input": PLANTED}).json()["results"]
    ids = [r["id"] for r in answers]
    for request_id in ids:
        assert client.post("/v1/feedback", json={"request_id": request_id, "rating": -1}).status_code == 200
    for request_id in ids:
        entry = logged(server, request_id)
        assert "<EMAIL>" in entry.input_text or "<PHONE>" in entry.input_text or "<CARD>" in entry.input_text


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_pii_reaches_the_database(backend, variants, keys, tmp_path):
    planted_digits = [PHONE.replace(" ", ""), CARD.replace(" ", ""), "7946 0958", "1111 1111"]
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.db'}"
        with Server(settings(variants, url)) as server:
            server.records = url
            plant_pii(server)
        dump = scan_sqlite(url) + (tmp_path / "records.db").read_bytes().decode("latin-1")
    else:
        with postgres_server() as url, Server(settings(variants, url)) as server:
            server.records = url
            plant_pii(server)
            dump = scan_postgres(url)
    assert "the film" in dump  # the scan sees the logged text
    for secret in [EMAIL, "jane.doe", PHONE, CARD, *planted_digits]:
        assert secret not in dump, f"{secret!r} reached the {backend} database"


def test_promotion_needs_an_admin_key_then_swaps_the_winner_in_and_ends_the_test(variants, keys, tmp_path):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    with Server(settings(variants, url)) as server:
        user = server.client()
        versions = {m["id"]: m["version"] for m in user.get("/v1/models").json()["data"]}
        assert versions["a"] != versions["b"]
        refused = user.post("/admin/experiments/a/promote", json={"variant": "b"})
        assert refused.status_code == 403
        admin = server.client(key=ADMIN)
        listed = admin.get("/admin/experiments").json()["experiments"]
        assert [v["model"] for v in listed[0]["variants"]] == ["a", "b"]
        unknown = admin.post("/admin/experiments/a/promote", json={"variant": "c"})
        assert unknown.status_code == 400
        promoted = admin.post("/admin/experiments/a/promote", json={"variant": "b"})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["serves"]["version"] == versions["b"]
        after = user.post("/v1/classify", json={"model": "a", "input": "ok"}, headers={"X-User-Id": "user-1"})
        assert after.status_code == 200
        assert admin.get("/admin/experiments").json()["experiments"] == []
        server.records = url
        entry = logged(server, after.json()["results"][0]["id"])
    assert (entry.model, entry.model_version, entry.experiment) == ("a", versions["b"], None)


def test_retention_deletes_old_requests_and_their_feedback_at_start(variants, keys, tmp_path):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    old, new = (RequestLog(id=name, model="a", model_version="v", route="/v1/classify", task="classify",
                           input_text="x", output={"label": "1"}, latency_ms=1.0,
                           created_at=utcnow() - timedelta(days=age))
                for name, age in (("old", 40), ("new", 1)))
    with open_store(url) as store:
        store.log_requests([old, new])
        store.add_feedback(Feedback(request_id="old", rating=1))
    kept = settings(variants, url).model_copy(update={"retention_days": 30})
    with Server(kept) as server:
        deadline = time.monotonic() + 30
        with open_store(url) as store:
            while store.request("old") is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert store.request("old") is None and store.request("new") is not None
            assert store.feedback(["old"]) == []
        assert server.client().get("/v1/models").status_code == 200


def test_the_review_page_is_served_by_lmforge_serve_review_behind_the_key(variants, keys, tmp_path):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    with Server(settings(variants, url).model_copy(update={"review": True})) as server:
        browser = server.client(key=None)
        assert browser.get("/review").status_code == 200  # the key form
        assert browser.get("/review/api/queues").status_code == 401
        assert browser.post("/review/login", json={"key": "wrong"}).status_code == 401
        assert browser.post("/review/login", json={"key": KEY}).status_code == 204
        assert browser.get("/review/api/queues").status_code == 200  # the cookie now
        assert browser.get("/v1/models").status_code == 401  # but only for the review page
    with Server(settings(variants, url)) as plain:
        assert plain.client().get("/review/api/queues").status_code == 404
