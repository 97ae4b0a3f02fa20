"""Error mining, Label Studio exchange, corrections as training data and the A/B input, on a records
database filled by hand: the expected queue, file and per-user values are worked out in the test."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from lmforge.data.tasks import read_conll, read_text_labels
from lmforge.improve.abtest_records import variant_data
from lmforge.improve.corrections import write_training_file
from lmforge.improve.labelstudio import LabelStudioError, export_queue, import_annotations
from lmforge.improve.mine import MiningError, mine
from lmforge.records import Correction, Feedback, RequestLog, Span, open_store, utcnow


def model_folder(root: Path) -> Path:
    """Just the heads.json that mining reads the label sets from."""
    folder = root / "model"
    folder.mkdir()
    heads = {"sentiment": {"task": "classify", "labels": ["negative", "positive"]},
             "entities": {"task": "ner", "labels": ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]}}
    (folder / "heads.json").write_text(json.dumps({"heads": heads}))
    return folder


def classify(i: int, text: str, confidence: float, label: str = "positive", **extra) -> RequestLog:
    return RequestLog(id=f"r{i}", model="m", model_version="v1", route="/v1/classify", task="classify",
                      input_text=text, output={"label": label, "score": confidence}, latency_ms=10.0 + i,
                      confidence=confidence, created_at=utcnow() - timedelta(seconds=1000 - i), **extra)


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "records.db") as opened:
        yield opened


def test_negative_feedback_first_then_least_confident_one_per_text(store, tmp_path):
    # 300 requests: 1% rounds up to 3, but both complaints are queued before any low confidence
    logs = [classify(i, f"an ordinary review number {i}", 0.99) for i in range(300)]
    logs[10] = classify(10, "Dull  and long", 0.51)      # least confident
    logs[11] = classify(11, "dull and LONG", 0.52)       # the same text: queued once, at its worst
    logs[12] = classify(12, "not sure about it", 0.60)   # second least confident
    logs[13] = classify(13, "great acting", 0.97)        # a user says it is wrong (label)
    logs[14] = classify(14, "terrible plot", 0.95)       # a user rates it -1
    store.log_requests(logs)
    store.add_feedback(Feedback(request_id="r13", label="negative"))
    store.add_feedback(Feedback(request_id="r14", rating=-1))
    store.add_feedback(Feedback(request_id="r20", rating=1))   # praise is not a complaint
    store.add_feedback(Feedback(request_id="r21", label="positive"))  # agrees with the answer
    report = mine(store, model_folder(tmp_path), share=0.01)
    items = store.review_items(queue=report.queue)
    # equally negative: the less confident answer first
    assert [i.text for i in items] == ["terrible plot", "great acting", "Dull  and long"]
    assert (report.considered, report.queued, report.negative_feedback) == (300, 3, 2)
    assert items[1].labels == ["negative", "positive"]
    assert items[1].prediction["feedback"] == {"label": "negative"}
    assert items[2].reason == "confidence 0.510" and items[2].request_id == "r10"
    again = mine(store, tmp_path / "model", share=0.01)
    assert again.queued == 0 and again.already_queued == 3


def test_mining_names_what_is_missing(store, tmp_path):
    with pytest.raises(MiningError, match="no logged classify requests"):
        mine(store, model_folder(tmp_path))
    store.log_requests([classify(0, "x", 0.5)])
    with pytest.raises(MiningError, match="exactly one classify head named 'nope'"):
        mine(store, tmp_path / "model", head="nope")


def ner_item_queue(store, tmp_path) -> str:
    text = "Anna flew to Paris"
    store.log_requests([RequestLog(id="n1", model="m", model_version="v1", route="/v1/ner", task="ner",
                                   input_text=text, latency_ms=5.0, confidence=0.4,
                                   output={"entities": [{"start": 0, "end": 4, "label": "LOC",
                                                         "score": 0.4}]})])
    return mine(store, model_folder(tmp_path), task="ner").queue


def test_label_studio_round_trip_becomes_corrections_and_a_conll_file(store, tmp_path):
    queue = ner_item_queue(store, tmp_path)
    out = tmp_path / "tasks.json"
    assert export_queue(store, queue, out) == 1
    (task,) = json.loads(out.read_text())
    result = task["predictions"][0]["result"]
    assert result[0]["value"] == {"start": 0, "end": 4, "text": "Anna", "labels": ["LOC"]}
    assert '<Label value="PER"/>' in out.with_suffix(".xml").read_text()
    # the annotator fixes Anna's type and adds Paris, as Label Studio's export would hold it
    task["annotations"] = [{"completed_by": {"email": "ann@example.org"}, "was_cancelled": False, "result": [
        {"from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": 0, "end": 4, "text": "Anna", "labels": ["PER"]}},
        {"from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": 13, "end": 18, "text": "Paris", "labels": ["LOC"]}}]}]
    annotated = tmp_path / "export.json"
    annotated.write_text(json.dumps([task]))
    assert import_annotations(store, annotated, queue) == (1, 0)
    ((item, correction),) = store.corrections(queue=queue)
    assert correction.spans == [Span(0, 4, "PER"), Span(13, 18, "LOC")] and correction.edits == 2
    assert correction.author == "labelstudio:ann@example.org" and item.status == "done"
    task_kind, n = write_training_file(store, queue, tmp_path / "fixes.conll")
    (example,) = read_conll(tmp_path / "fixes.conll")
    assert (task_kind, n) == ("ner", 1)
    assert list(zip(example.tokens, example.tags, strict=True)) == [
        ("Anna", "B-PER"), ("flew", "O"), ("to", "O"), ("Paris", "B-LOC")]


@pytest.mark.parametrize("damage, message", [
    (lambda t: t["data"]["meta"].pop("lmforge_item"), "not exported from an lmforge queue"),
    (lambda t: t["data"].update(text="other text"), "from another project"),
    (lambda t: t["annotations"][0]["result"][0].update(from_name="sentiment"), "another project"),
    (lambda t: t["annotations"][0]["result"][0]["value"].update(labels=["ORG"]), "unknown label"),
    (lambda t: t["annotations"][0]["result"][0]["value"].update(end=99), "outside the text"),
])
def test_a_label_studio_file_from_elsewhere_stores_nothing(store, tmp_path, damage, message):
    queue = ner_item_queue(store, tmp_path)
    export_queue(store, queue, tmp_path / "tasks.json")
    (task,) = json.loads((tmp_path / "tasks.json").read_text())
    task["annotations"] = [{"completed_by": 1, "result": [
        {"from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": 0, "end": 4, "text": "Anna", "labels": ["PER"]}}]}]
    good = dict(task, data=dict(task["data"]))
    damage(task)
    (tmp_path / "bad.json").write_text(json.dumps([good, task]))
    with pytest.raises(LabelStudioError, match=message):
        import_annotations(store, tmp_path / "bad.json", queue)
    assert store.corrections(queue=queue) == []  # the good task before the bad one was not stored either


def test_classification_corrections_become_jsonl_rows(store, tmp_path):
    store.log_requests([classify(i, f"text {i}", 0.5 + i / 100) for i in range(3)])
    queue = mine(store, model_folder(tmp_path), share=1.0).queue
    items = store.review_items(queue=queue)
    store.save_correction(Correction(item_id=items[0].id, author="rev", accepted=False, label="negative",
                                     edits=1))
    store.save_correction(Correction(item_id=items[1].id, author="rev", accepted=True, label="positive"))
    write_training_file(store, queue, tmp_path / "fixes.jsonl")
    rows = read_text_labels(tmp_path / "fixes.jsonl", "text", "label")
    assert [(r.text, r.label) for r in rows] == [("text 0", "negative"), ("text 1", "positive")]


def test_ab_input_has_one_value_per_user_and_leaves_out_users_seen_in_both_arms(store):
    logs = [classify(0, "a", 0.9, experiment="e", variant="a", user="u1"),
            classify(1, "b", 0.9, experiment="e", variant="a", user="u1"),
            classify(2, "c", 0.9, experiment="e", variant="b", user="u2"),
            classify(3, "d", 0.9, experiment="e", variant="a", user="u3"),
            classify(4, "e", 0.9, experiment="e", variant="b", user="u3"),
            classify(5, "f", 0.9, user="u4")]  # not in the experiment
    store.log_requests(logs)
    store.add_feedback(Feedback(request_id="r0", rating=1))
    store.add_feedback(Feedback(request_id="r1", rating=-1, label="positive"))
    store.add_feedback(Feedback(request_id="r1", label="negative"))
    extracted = variant_data(store, "e", ["a", "b"], [0.5, 0.5])
    a, b = extracted.variants
    assert (extracted.requests, extracted.mixed_users) == (5, 1)
    assert a.metrics["rating"].tolist() == [0.0] and a.metrics["agreement"].tolist() == [0.5]
    assert a.metrics["latency_ms"].tolist() == [10.5]
    assert np.isnan(b.metrics["rating"]).all() and b.metrics["latency_ms"].tolist() == [12.0]
