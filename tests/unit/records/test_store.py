"""The records store on SQLite and on a real PostgreSQL server: every record type comes back as it
went in, a write that fails validation stores nothing, retention deletes a request's feedback with
it, and review queues de-duplicate and hand out items in (priority, id) order."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, event

from lmforge.errors import LmforgeError
from lmforge.records import (
    Correction,
    Feedback,
    InvalidCorrection,
    RecordsError,
    RequestLog,
    ReviewItem,
    Span,
    UnknownRequest,
    open_store,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
PARIS = timezone(timedelta(hours=2))
TEXT = "Ada Lovelace a vécu à Londres 🇬🇧."  # 33 characters (the flag is two code points)
LABELS = ["PER", "LOC"]


def request(id_: str = "r1", *, at: datetime = T0, **changes) -> RequestLog:
    values = {"model": "tiny", "model_version": "sha256:ab12", "route": "/v1/ner", "task": "ner",
              "input_text": TEXT, "output": {"entities": []}, "latency_ms": 12.5, "created_at": at}
    return RequestLog(id=id_, **{**values, **changes})


def item(text: str = TEXT, **changes) -> ReviewItem:
    values = {"task": "ner", "labels": LABELS, "prediction": {"spans": []}}
    return ReviewItem(text=text, **{**values, **changes})


def assert_utc(moment: datetime) -> None:
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)


# --- round trips --------------------------------------------------------------------------------

def test_a_request_comes_back_with_every_field_json_and_utc_time(store):
    logged = request(
        "a" * 32, output={"entities": [{"start": 0, "end": 12, "label": "PER", "score": 0.875}],
                          "nested": {"list": [1, 2.5, None, True], "texte": "déjà"}},
        status=201, confidence=0.3125, head="ner", experiment="exp-1", variant="B", user="u-77",
        at=datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=PARIS))
    store.log_requests([logged, request("other", at=T0 + timedelta(seconds=1))])
    got = store.request("a" * 32)
    assert_utc(got.created_at)
    assert got.created_at == T0  # 14:00:00.123456+02:00 is 12:00:00.123456 UTC
    assert got == replace(logged, created_at=T0)
    assert store.request("never") is None


def test_feedback_review_item_and_correction_come_back_as_they_went_in(store):
    store.log_requests([request("r1")])
    feedback = Feedback("r1", rating=-1.0, label="LOC", spans=[Span(0, 12, "PER", 0.5), Span(22, 29, "LOC")],
                        author="key:9f", created_at=T0)
    feedback_id = store.add_feedback(feedback)
    assert store.feedback() == [replace(feedback, id=feedback_id)]
    assert_utc(store.feedback()[0].created_at)

    queued = item(prediction={"spans": [{"start": 0, "end": 3, "label": "PER", "score": 0.41}]},
                  source="import", priority=0.25, reason="confidence 0.41", request_id="r1",
                  model_version="sha256:ab12", queue="week-18", created_at=T0 + timedelta(minutes=1))
    [item_id] = store.add_review_items([queued])
    assert store.review_item(item_id) == replace(queued, id=item_id)

    correction = Correction(item_id, "key:77", accepted=False, spans=[Span(0, 12, "PER")], edits=2,
                            seconds=8.25, created_at=T0 + timedelta(minutes=2))
    correction_id = store.save_correction(correction)
    [(done, saved)] = store.corrections()
    assert done == replace(queued, id=item_id, status="done")
    assert saved == replace(correction, id=correction_id)
    assert_utc(saved.created_at)


def test_requests_filter_by_time_model_experiment_and_task_oldest_first(store):
    store.log_requests([request("late", at=T0 + timedelta(hours=2), experiment="e1"),
                        request("early", at=T0, model="other", experiment="e1"),
                        request("middle", at=T0 + timedelta(hours=1), task="classify", route="/v1/classify")])
    assert [r.id for r in store.requests()] == ["early", "middle", "late"]
    assert [r.id for r in store.requests(since=T0 + timedelta(hours=1))] == ["middle", "late"]  # inclusive
    assert [r.id for r in store.requests(model="tiny")] == ["middle", "late"]
    assert [r.id for r in store.requests(experiment="e1", model="tiny")] == ["late"]
    assert [r.id for r in store.requests(task="classify")] == ["middle"]


def test_feedback_can_be_read_for_some_requests(store):
    store.log_requests([request("r1"), request("r2"), request("r3")])
    ids = [store.add_feedback(Feedback(request_id, rating=1.0)) for request_id in ("r1", "r2", "r1", "r3")]
    assert [f.id for f in store.feedback(["r1", "r3"])] == [ids[0], ids[2], ids[3]]
    assert store.feedback([]) == []


# --- validation: nothing stored -------------------------------------------------------------------

def test_feedback_on_an_unknown_request_is_refused_and_stores_nothing(store):
    store.log_requests([request("r1")])
    with pytest.raises(UnknownRequest, match="'nope'") as raised:
        store.add_feedback(Feedback("nope", rating=1.0))
    assert isinstance(raised.value, RecordsError) and isinstance(raised.value, LmforgeError)
    assert store.feedback() == []


@pytest.mark.parametrize("spans", [[Span(30, 34, "LOC")], [Span(5, 5, "PER")],
                                   [Span(0, 4, "PER"), Span(3, 8, "PER")]],
                         ids=["outside", "empty", "overlap"])
def test_feedback_whose_spans_do_not_fit_the_logged_text_stores_nothing(store, spans):
    store.log_requests([request("r1")])
    with pytest.raises(InvalidCorrection):
        store.add_feedback(Feedback("r1", spans=spans))
    assert store.feedback() == []


BAD_CORRECTIONS = {
    "end past the text": {"spans": [Span(22, 34, "LOC")]},
    "negative start": {"spans": [Span(-1, 3, "PER")]},
    "start equals end": {"spans": [Span(4, 4, "PER")]},
    "start after end": {"spans": [Span(12, 4, "PER")]},
    "unknown entity label": {"spans": [Span(0, 12, "ORG")]},
    "overlapping spans": {"spans": [Span(22, 29, "LOC"), Span(0, 12, "PER"), Span(11, 14, "PER")]},
    "unknown class label": {"label": "ORG"},
    "unknown item": {"item_id": 10_000},
}


@pytest.mark.parametrize("bad", BAD_CORRECTIONS.values(), ids=BAD_CORRECTIONS.keys())
def test_a_correction_that_does_not_fit_its_item_stores_nothing_and_leaves_it_pending(store, bad):
    [item_id] = store.add_review_items([item()])
    with pytest.raises(InvalidCorrection) as raised:
        store.save_correction(Correction(**{"item_id": item_id, "author": "k", "accepted": False, **bad}))
    assert "\n" not in str(raised.value)
    assert store.corrections() == []
    assert store.review_item(item_id).status == "pending"
    assert store.queues() == {"default": {"pending": 1}}


def test_a_correction_at_the_edges_of_the_text_is_stored_and_marks_its_item_done(store):
    """Spans may touch each other and the text's last character (end is exclusive)."""
    [item_id, other] = store.add_review_items([item(), item("Paris")])
    spans = [Span(0, 3, "PER"), Span(3, 12, "PER"), Span(22, 33, "LOC")]
    store.save_correction(Correction(item_id, "k", accepted=False, spans=spans, edits=3))
    assert store.review_item(item_id).status == "done"
    assert store.review_item(other).status == "pending"
    [(_, saved)] = store.corrections()
    assert saved.spans == spans


def test_correcting_an_item_again_replaces_the_earlier_correction(store):
    [item_id] = store.add_review_items([item("good film", task="classify", labels=["pos", "neg"])])
    store.save_correction(Correction(item_id, "k1", accepted=True))
    second = store.save_correction(Correction(item_id, "k2", accepted=False, label="neg"))
    assert [(c.id, c.author, c.label) for _, c in store.corrections()] == [(second, "k2", "neg")]


# --- retention ------------------------------------------------------------------------------------

def test_purge_deletes_old_requests_with_their_feedback_and_unlinks_review_items(store):
    store.log_requests([request("old", at=T0 - timedelta(days=40)), request("edge", at=T0),
                        request("new", at=T0 + timedelta(days=1))])
    for request_id in ("old", "old", "edge", "new"):
        store.add_feedback(Feedback(request_id, rating=1.0))
    [mined, kept] = store.add_review_items([item(request_id="old"), item("Londres", request_id="new")])

    assert store.purge(T0) == 1  # strictly older than T0: "edge" stays
    assert store.request("old") is None
    assert [r.id for r in store.requests()] == ["edge", "new"]
    assert [f.request_id for f in store.feedback()] == ["edge", "new"]
    unlinked = store.review_item(mined)
    assert unlinked == replace(item(), id=mined, created_at=unlinked.created_at)  # text kept, request_id None
    assert store.review_item(kept).request_id == "new"
    assert store.purge(T0) == 0


# --- review queues --------------------------------------------------------------------------------

def test_review_items_are_deduplicated_on_queue_task_and_text(store):
    first = store.add_review_items([item("a"), item("b"), item("a", priority=5.0)])
    assert len(first) == 2
    [done] = first[:1]
    store.save_correction(Correction(done, "k", accepted=True))
    added = store.add_review_items([item("a"), item("b"), item("a", queue="q2"), item("a", task="classify"),
                                    item("c"), item("a" * 5000), item("a" * 5000)])
    assert len(added) == 4  # "a" in q2, "a" for classify, "c", the long text once
    assert [(i.queue, i.task, i.text[:2]) for i in store.review_items() if i.id in added] == [
        ("q2", "ner", "a"), ("default", "classify", "a"), ("default", "ner", "c"), ("default", "ner", "aa")]
    assert store.queues() == {"default": {"pending": 4, "done": 1}, "q2": {"pending": 1}}


def test_review_items_come_in_priority_then_id_order(store):
    ids = store.add_review_items([item("p5 first", priority=0.5), item("p1", priority=0.1),
                                  item("p5 second", priority=0.5), item("p9", priority=0.9),
                                  item("other queue", queue="q2", priority=0.0)])
    p5a, p1, p5b, p9, elsewhere = ids
    assert [i.id for i in store.review_items()] == [elsewhere, p1, p5a, p5b, p9]
    assert [i.id for i in store.review_items(queue="default", limit=2)] == [p1, p5a]
    store.save_correction(Correction(p5a, "k", accepted=True))
    assert [i.id for i in store.review_items(status="pending", queue="default")] == [p1, p5b, p9]
    assert [i.id for i in store.review_items(status="done")] == [p5a]


def test_next_review_item_walks_pending_items_after_the_skipped_one_and_comes_round(store):
    assert store.next_review_item() is None
    p5a, p1, p5b, p9 = store.add_review_items([item("p5 first", priority=0.5), item("p1", priority=0.1),
                                               item("p5 second", priority=0.5), item("p9", priority=0.9)])
    store.add_review_items([item("elsewhere", queue="q2", priority=-1.0)])
    assert store.next_review_item().id == p1
    assert store.next_review_item(after=p1).id == p5a
    assert store.next_review_item(after=p5a).id == p5b  # same priority: the higher id is after
    assert store.next_review_item(after=p5b).id == p9
    assert store.next_review_item(after=p9).id == p1  # round again, to the first pending one
    store.save_correction(Correction(p5b, "k", accepted=True))
    assert store.next_review_item(after=p5a).id == p9  # done items are not handed out
    for done in (p1, p5a, p9):
        store.save_correction(Correction(done, "k", accepted=True))
    assert store.next_review_item() is None
    assert store.next_review_item(after=p9) is None
    assert store.next_review_item("q2").text == "elsewhere"


def test_corrections_filter_by_queue_and_task_in_the_order_they_were_saved(store):
    ner, classify, other = store.add_review_items([
        item(), item("bon film", task="classify", labels=["pos", "neg"]), item("Oslo", queue="q2")])
    for item_id in (classify, other, ner):
        store.save_correction(Correction(item_id, "k", accepted=True))
    assert [i.id for i, _ in store.corrections()] == [classify, other, ner]
    assert [i.id for i, _ in store.corrections(queue="default")] == [classify, ner]
    assert [i.id for i, _ in store.corrections(queue="default", task="ner")] == [ner]


def test_a_missing_review_item_is_an_invalid_correction(store):
    with pytest.raises(InvalidCorrection, match="review item 404 not found"):
        store.review_item(404)


# --- concurrent writers (SQLite) ----------------------------------------------------------------

def test_a_sqlite_writer_waits_for_another_writer_instead_of_failing(tmp_path):
    """Another process holds SQLite's write lock and commits only once the store's feedback write has
    started: the store must queue behind it, not read first and then be refused for a stale snapshot."""
    path = tmp_path / "records.db"
    with open_store(path) as opened:
        opened.log_requests([request("r1")])
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE requests SET latency_ms = 99.0")
        read_the_request = threading.Event()

        def note_reads(conn, cursor, statement, *_):
            if statement.startswith("SELECT") and "FROM requests" in statement:
                read_the_request.set()

        event.listen(Engine, "after_cursor_execute", note_reads)
        outcome: list = []
        writer = threading.Thread(target=lambda: outcome.append(_try(opened.add_feedback, Feedback("r1"))))
        try:
            writer.start()
            # A store that reads before locking has read by now; one that locks first is still waiting.
            read_the_request.wait(timeout=0.5)
            other.execute("COMMIT")
            writer.join()
        finally:
            event.remove(Engine, "after_cursor_execute", note_reads)
            other.close()
        assert isinstance(outcome[0], int), outcome[0]
        assert [f.request_id for f in opened.feedback()] == ["r1"]
        assert opened.request("r1").latency_ms == 99.0


def _try(function, *args):
    try:
        return function(*args)
    except RecordsError as err:
        return err
