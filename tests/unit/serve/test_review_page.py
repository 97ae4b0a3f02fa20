"""The review page in a real browser: headless Chromium (Playwright) against the review router under
a real uvicorn, its decisions read back from the records database they were stored in."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from processes import free_port

from lmforge.records import open_store
from lmforge.records.types import ReviewItem
from lmforge.serve.auth import KeyRing, fingerprint
from lmforge.serve.routes_review import review_key, router

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")

KEY = "reviewer-key-1"
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
INTENTS = ["card_lost", "top_up", "refund"]
NER_TEXT = "😀 Anna met Omar in Paris today"
"""An emoji first: JavaScript counts it as two UTF-16 units, Python as one character."""


def ner_span(word: str, label: str, score: float) -> dict:
    start = NER_TEXT.index(word)
    return {"start": start, "end": start + len(word), "label": label, "score": score}


ITEMS = [
    ReviewItem(task="classify", text="I lost my card on the train", labels=INTENTS, queue="q", priority=0,
               prediction={"label": "card_lost", "score": 0.93}, reason="confidence 0.93"),
    ReviewItem(task="classify", text="how do I add money with apple pay", labels=INTENTS, queue="q",
               priority=1, prediction={"label": "refund", "score": 0.41}, reason="confidence 0.41"),
    ReviewItem(task="ner", text=NER_TEXT, labels=["location", "person"], queue="q", priority=2,
               source="label", prediction={"spans": [
                   ner_span("Anna", "person", 0.94), ner_span("met", "person", 0.31),
                   ner_span("Omar", "person", 0.88), ner_span("today", "location", 0.42)]}),
]


class Server:
    """The review router in a bare FastAPI app under uvicorn, in a thread of the test process."""

    def __init__(self, store, keys: KeyRing):
        app = FastAPI()
        app.include_router(router)
        app.state.store, app.state.keys = store, keys
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server stopped while starting")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def store(tmp_path):
    opened = open_store(tmp_path / "records.db")
    opened.add_review_items(ITEMS)
    yield opened
    opened.close()


@pytest.fixture
def server(store):
    with Server(store, KeyRing([KEY])) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield launched
        launched.close()


def test_a_wrong_key_is_refused(server, browser):
    page = browser.new_page()
    page.goto(f"{server.url}/review")
    page.fill("#key", "not-the-key")
    page.press("#key", "Enter")
    sync_api.expect(page.locator("#login-error")).to_have_text("That key is not valid here.")
    assert page.context.cookies() == []
    page.close()
    for headers in ({}, {"Authorization": "Bearer not-the-key"}):
        assert httpx.get(f"{server.url}/review/api/queues", headers=headers).status_code == 401
        assert httpx.post(f"{server.url}/review/api/items/1/correction", json={"accepted": True},
                          headers=headers).status_code == 401
    assert httpx.get(f"{server.url}/review/api/queues",
                     headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_review_classify_and_ner_items_with_the_keyboard(server, store, browser):
    page = browser.new_page(viewport={"width": 1100, "height": 720})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    expect, text = sync_api.expect, page.locator("#text")

    page.goto(f"{server.url}/review")
    page.fill("#key", KEY)
    page.click("button[type=submit]")
    expect(text).to_have_text(ITEMS[0].text)
    cookie = page.context.cookies()[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] == KEY
    expect(page.locator("#counts")).to_have_text("0 done · 3 pending")

    for shown in (ITEMS[1], ITEMS[2], ITEMS[0]):  # skipping walks the queue and comes round again
        page.keyboard.press("s")
        expect(text).to_have_text(shown.text)
    page.keyboard.press("Enter")  # accept "card_lost"
    expect(text).to_have_text(ITEMS[1].text)
    page.keyboard.press("2")  # the second label, top_up, instead of the predicted refund
    expect(page.locator("#choices li.chosen")).to_contain_text("top_up")
    page.keyboard.press("Enter")
    expect(page.locator("mark.ent")).to_have_count(4)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review_page.png"))

    page.locator("mark.ent", has_text="met").click()  # a click removes a span
    page.locator("mark.ent", has_text="today").focus()
    page.keyboard.press("Backspace")  # so does Backspace on the focused one
    expect(page.locator("mark.ent")).to_have_count(2)
    drag_across(page, page.locator("span.w", has_text="Paris"))  # part of the word: snaps to all of it
    page.keyboard.press("1")  # location
    expect(page.locator("mark.ent[data-label=location]")).to_have_text("Paris")
    page.keyboard.press("Enter")
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#counts")).to_have_text("3 done · 0 pending")

    decided = {item.text: correction for item, correction in store.corrections(queue="q")}
    who = fingerprint(KEY)
    accepted, relabelled, tagged = (decided[item.text] for item in ITEMS)
    assert (accepted.accepted, accepted.label, accepted.edits, accepted.author) == (True, "card_lost", 0, who)
    assert (relabelled.accepted, relabelled.label, relabelled.edits) == (False, "top_up", 1)
    assert relabelled.author == who
    assert [(s.start, s.end, s.label) for s in tagged.spans] == [(2, 6, "person"), (11, 15, "person"),
                                                                 (19, 24, "location")]
    assert NER_TEXT[19:24] == "Paris"
    assert (tagged.accepted, tagged.edits, tagged.author) == (False, 3, who)  # 2 deletes + 1 add
    assert tagged.seconds is not None and tagged.seconds > 0
    assert problems == []
    page.close()


def drag_across(page, word) -> None:
    """A real mouse drag from 30% to 70% of the word's width."""
    box = word.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 0.3 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.7 * box["width"], y, steps=5)
    page.mouse.up()


def test_api_errors_are_one_line(server, store):
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"})
    ner_id = store.review_items(queue="q")[2].id
    assert client.get("/review/api/items/999").status_code == 404
    assert client.post("/review/api/items/999/correction", json={"accepted": True}).status_code == 404
    outside = client.post(f"/review/api/items/{ner_id}/correction",
                          json={"accepted": False, "spans": [{"start": 20, "end": 99, "label": "person"}]})
    assert outside.status_code == 400
    message = outside.json()["error"]["message"]
    assert "outside the text" in message and "\n" not in message
    unknown = client.post(f"/review/api/items/{ner_id}/correction",
                          json={"accepted": False, "spans": [{"start": 2, "end": 6, "label": "ORG"}]})
    assert unknown.status_code == 400 and "unknown label" in unknown.json()["error"]["message"]
    assert store.corrections() == []  # nothing stored by a refused correction


def test_an_accepted_ner_item_keeps_the_prediction(server, store):
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"})
    ner_id = store.review_items(queue="q")[2].id
    answer = client.post(f"/review/api/items/{ner_id}/correction", json={"accepted": True, "seconds": 1.5})
    assert answer.json()["edits"] == 0
    [(_, correction)] = store.corrections(queue="q")
    assert [(s.start, s.end, s.label) for s in correction.spans] == [
        (sp["start"], sp["end"], sp["label"]) for sp in ITEMS[2].prediction["spans"]]
    assert correction.accepted and correction.seconds == 1.5


def test_without_keys_everything_is_open(store):
    with Server(store, KeyRing()) as running:
        page = httpx.get(f"{running.url}/review")
        assert page.status_code == 200 and 'id="text"' in page.text  # the page, not the key form
        assert "default-src 'self'" in page.headers["content-security-policy"]
        item = httpx.get(f"{running.url}/review/api/next", params={"queue": "q"}).json()
        saved = httpx.post(f"{running.url}/review/api/items/{item['id']}/correction",
                           json={"accepted": False, "label": "refund"}).json()
        assert saved["edits"] == 1
    [(_, correction)] = store.corrections()
    assert correction.author == "anonymous"


@pytest.mark.parametrize(("path", "expected"), [("/review", KEY), ("/review/api/queues", KEY),
                                                ("/v1/models", None), ("/reviews", None)])
def test_the_review_cookie_counts_on_review_paths_only(path, expected):
    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"",
             "headers": [(b"cookie", f"lmforge_review={KEY}".encode())]}
    assert review_key(Request(scope)) == expected
