"""Semi-automatic NER labelling: the edit count on hand-made cases, and pre-labels equal to what the
server's NER path answers for the same texts (an independent implementation: `serve.heads` over the
runtime's exported-signature modules, in numpy)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from lmforge.errors import LmforgeError
from lmforge.improve.labelling import edit_count, prelabel, read_texts
from lmforge.records import Span, open_store
from lmforge.serve.heads import encode_job, run_jobs
from lmforge.serve.runtime import open_model
from lmforge.train.finetune import finetune
from lmforge.train.finetune_config import FinetuneConfig

PEOPLE = ["Anna", "Omar", "Lena", "Tomas", "Sara", "Yuki", "Pedro", "Ines"]
PLACES = ["Paris", "Berlin", "Lagos", "Lima", "Osaka", "Quito", "Oslo", "Cairo"]


def s(start: int, end: int, label: str = "PER") -> Span:
    return Span(start, end, label)


@pytest.mark.parametrize(("predicted", "final", "edits"), [
    ([s(0, 4), s(10, 15, "LOC")], [s(0, 4), s(10, 15, "LOC")], 0),  # exact: nothing to do
    ([s(0, 4, "LOC")], [s(0, 4)], 1),                                # wrong label on the right span
    ([s(0, 9)], [s(0, 4)], 1),                                       # wrong boundary
    ([s(2, 9, "LOC")], [s(0, 4)], 1),                                # boundary and label: one fix
    ([], [s(0, 4), s(10, 15)], 2),                                   # missing: from scratch = len(final)
    ([s(0, 4), s(20, 25)], [s(0, 4)], 1),                            # spurious: one delete
    ([], [], 0),                                                     # both empty
    ([s(0, 4)], [s(10, 15)], 2),                                     # no overlap: delete + add
    ([s(0, 10)], [s(0, 4), s(5, 10)], 2),                            # split: one fix + one add
    ([s(0, 4), s(5, 10)], [s(0, 10)], 2),                            # merge: one fix + one delete
    ([s(0, 3), s(5, 9)], [s(0, 6), s(8, 12)], 2),                   # two fixes, one predicted span each
    ([s(0, 4)], [s(4, 8)], 2),                                       # adjacent is not overlapping
    ([s(0, 4, "LOC"), s(6, 9)], [s(0, 4), s(6, 9)], 1),              # one of two wrong
])
def test_edit_count_by_hand(predicted, final, edits):
    assert edit_count(predicted, final) == edits
    assert edit_count([], final) == len(final)  # labelling from scratch


def test_edit_count_ignores_scores():
    assert edit_count([Span(0, 4, "PER", 0.31)], [Span(0, 4, "PER")]) == 0


@pytest.fixture(scope="module")
def ner_folder(lm_folder, tmp_path_factory) -> Path:
    """`lm_folder` fine-tuned briefly on 120 template sentences with person and location entities."""
    root = tmp_path_factory.mktemp("ner")
    rng = random.Random(0)
    sentences = []
    for _ in range(120):
        words = [(rng.choice(PEOPLE), "B-person"), ("met", "O"), (rng.choice(PEOPLE), "B-person"),
                 ("in", "O"), (rng.choice(PLACES), "B-location"), ("today", "O")]
        sentences.append("".join(f"{word}\t{tag}\n" for word, tag in words) + "\n")
    (root / "train.conll").write_text("".join(sentences), encoding="utf-8")
    cfg = FinetuneConfig(model=lm_folder, task="ner", head="entities", out=root / "model", steps=40,
                         eval_every=40, lr=3e-3, batch_size=16, max_len=16,
                         data={"train": root / "train.conll"})
    return finetune(cfg, resume=None).model_dir


TEXTS = ["Anna met Omar in Paris today", "Sara met Pedro in Lima today, then flew to Oslo.",
         "nothing here at all", "Yuki met Ines in Quito today"]


def test_prelabel_queues_what_the_server_answers(ner_folder, tmp_path):
    store = open_store(tmp_path / "records.db")
    assert prelabel(ner_folder, TEXTS, store, "wnut-batch", device="cpu") == len(TEXTS)
    items = store.review_items(queue="wnut-batch")
    assert [item.text for item in items] == TEXTS
    assert all(item.source == "label" and item.task == "ner" and item.status == "pending" for item in items)
    assert items[0].labels == ["location", "person"]  # the head's tag order, B-/I- removed

    served = open_model(ner_folder, device="cpu")
    head = served.head("ner")
    expected = asyncio.run(run_jobs(head, [encode_job(served, head, TEXTS)]))[0]
    assert sum(len(result["entities"]) for result in expected) >= 3  # the model does find entities
    for item, result in zip(items, expected, strict=True):
        spans = item.prediction["spans"]
        assert [(e["start"], e["end"], e["label"]) for e in result["entities"]] == \
               [(sp["start"], sp["end"], sp["label"]) for sp in spans]
        assert [sp["score"] for sp in spans] == pytest.approx([e["score"] for e in result["entities"]],
                                                              abs=1e-3)
        assert item.model_version == served.version

    # running the same job again queues nothing twice
    assert prelabel(ner_folder, TEXTS[:2], store, "wnut-batch", device="cpu") == 0

    # a score threshold keeps exactly the entities scored at or above it
    scores = sorted(sp["score"] for item in items for sp in item.prediction["spans"])
    threshold = scores[len(scores) // 2]
    prelabel(ner_folder, TEXTS, store, "confident", device="cpu", min_score=threshold)
    kept = [[sp for sp in item.prediction["spans"] if sp["score"] >= threshold] for item in items]
    assert [item.prediction["spans"] for item in store.review_items(queue="confident")] == kept
    assert 0 < sum(map(len, kept)) < len(scores)
    store.close()


def test_prelabel_refuses_a_model_without_an_ner_head(lm_folder, tmp_path):
    store = open_store(tmp_path / "records.db")
    with pytest.raises(LmforgeError, match=r"no NER head \(heads: .*causal_lm") as caught:
        prelabel(lm_folder, ["Anna met Omar"], store, "q", device="cpu")
    assert "\n" not in str(caught.value)
    assert store.queues() == {}
    store.close()


def test_read_texts(tmp_path):
    txt = tmp_path / "texts.txt"
    txt.write_text("first text\n\n  \nsecond text\n", encoding="utf-8")
    assert read_texts(txt) == ["first text", "second text"]
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text('{"text": "one", "id": 1}\n\n{"text": "two"}\n', encoding="utf-8")
    assert read_texts(jsonl) == ["one", "two"]
    jsonl.write_text('{"text": "one"}\n{"body": "two"}\n', encoding="utf-8")
    with pytest.raises(LmforgeError, match=r"texts\.jsonl:2: expected a JSON object with a \"text\""):
        read_texts(jsonl)
    jsonl.write_text('{"text": "one"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(LmforgeError, match=r"texts\.jsonl:2: not JSON"):
        read_texts(jsonl)
    with pytest.raises(LmforgeError, match=r"missing\.txt: no such file"):
        read_texts(tmp_path / "missing.txt")
    with pytest.raises(LmforgeError, match=r"texts\.csv: expected a \.txt file"):
        read_texts(tmp_path / "texts.csv")
