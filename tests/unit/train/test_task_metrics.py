"""Fine-tuning metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmforge.model.inputs import entity_spans
from lmforge.train.task_metrics import (
    accuracy,
    entity_prf,
    macro_f1,
    majority_baseline,
    recall_at_k,
)


def test_accuracy():
    assert accuracy(["a", "b", "b", "c"], ["a", "b", "c", "c"]) == 0.75
    with pytest.raises(ValueError, match="3 true labels but 2"):
        accuracy(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match="no labels"):
        accuracy([], [])


def test_macro_f1_by_hand():
    # a: tp 1, 2 true, 1 pred -> F1 = 2*1/(2+1) = 2/3
    # b: tp 1, 1 true, 2 pred -> 2/3
    # c: tp 0, 1 true, 0 pred -> 0;  d: 0 true, 1 pred -> 0
    y_true = ["a", "a", "b", "c", "e"]
    y_pred = ["a", "b", "b", "d", "e"]  # e: tp 1 -> 1
    assert macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 2 / 3 + 0 + 0 + 1) / 5)
    # "z" has no true and no predicted example: left out, not averaged in as 0.
    assert macro_f1(y_true, y_pred, labels=["a", "b", "c", "d", "e", "z"]) == macro_f1(y_true, y_pred)
    assert macro_f1(y_true, y_pred, labels=["a", "b"]) == pytest.approx(2 / 3)


def test_entity_spans_follow_conlleval_rules():
    tags = ["B-per", "I-per", "O", "I-loc", "I-loc", "B-loc", "I-per", "B-org", "B-org"]
    assert entity_spans(tags) == {
        ("per", 0, 2),
        ("loc", 3, 5),  # I- after O starts an entity
        ("loc", 5, 6),  # B- starts a new one even after the same type
        ("per", 6, 7),  # I- of another type starts one too
        ("org", 7, 8),
        ("org", 8, 9),  # an entity at the end is closed
    }
    assert entity_spans(["O", "O"]) == set()


def test_entity_prf_hand_checked():
    true = [["B-per", "I-per", "O", "B-loc"],
            ["O", "B-loc", "I-loc", "O", "B-per"],
            ["B-per", "I-per", "I-per"]]
    pred = [["B-per", "I-per", "O", "B-org"],   # per(0,2) right; org(3,4) has the wrong type
            ["O", "I-loc", "I-loc", "O", "O"],  # loc(1,3) right (I- after O starts it); per(4,5) missed
            ["B-per", "I-loc", "I-per"]]        # per(0,1), loc(1,2), per(2,3): none is per(0,3)
    # True entities 5 (per 3, loc 2); predicted 6 (per 3, loc 2, org 1); correct 2 (one per, one loc).
    # P = 2/6, R = 2/5, F1 = 2PR/(P+R) = (4/15)/(11/15) = 4/11.
    scores = entity_prf(true, pred)
    assert scores["precision"] == pytest.approx(1 / 3)
    assert scores["recall"] == pytest.approx(2 / 5)
    assert scores["f1"] == pytest.approx(4 / 11)
    # per: 1 of 3 right each way -> 1/3; loc: 1 of 2 -> 1/2; org: predicted, never true -> 0.
    assert scores["per_type"] == {
        "loc": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        "org": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
        "per": pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "f1": 1 / 3, "support": 3}),
    }


def test_entity_prf_edge_cases():
    assert entity_prf([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "per_type": {}}
    assert entity_prf([["B-x"]], [["B-x"]])["f1"] == 1.0
    with pytest.raises(ValueError, match="sentence 0: 2 true tags but 1"):
        entity_prf([["O", "O"]], [["O"]])


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def test_recall_at_k_on_points_of_a_circle():
    # Angles: a1 0, b1 25, a2 60, b2 90, c 200 (c's label occurs once: not a query, but retrievable).
    # Neighbours by angle: a1 -> b1 a2;  a2 -> b2 b1 a1;  b1 -> a1 a2 b2;  b2 -> a2 b1.
    # First same-label neighbour at rank: a1 2, a2 3, b1 3, b2 2.
    embeddings = np.array([unit(0), unit(25), unit(60), unit(90), unit(200)])
    labels = ["a", "b", "a", "b", "c"]
    assert recall_at_k(embeddings, labels, 1) == 0.0
    assert recall_at_k(embeddings, labels, 2) == 0.5
    assert recall_at_k(embeddings, labels, 3) == 1.0


def test_recall_at_k_rejects_bad_input():
    embeddings = np.eye(3)
    with pytest.raises(ValueError, match="k must be in"):
        recall_at_k(embeddings, ["a", "a", "b"], 3)
    with pytest.raises(ValueError, match="no label occurs twice"):
        recall_at_k(embeddings, ["a", "b", "c"], 1)
    with pytest.raises(ValueError, match="3 embeddings but 2 labels"):
        recall_at_k(embeddings, ["a", "a"], 1)


def test_majority_baseline():
    assert majority_baseline(["x", "y", "y"], ["y", "x", "y", "z"]) == 0.5
    assert majority_baseline(["x", "y"], ["x", "y", "y"]) == pytest.approx(1 / 3)  # tie: first seen, x
