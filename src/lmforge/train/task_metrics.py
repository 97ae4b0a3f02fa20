"""Evaluation metrics of the fine-tuning tasks, as pure functions of labels, tags and embeddings.

They follow the definitions published numbers use, so results compare with the literature:
macro-F1 as scikit-learn computes it, entity scores as seqeval / conlleval do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from lmforge.model.inputs import Span, entity_spans


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Fraction of predictions equal to the true label."""
    _check_paired(y_true, y_pred)
    return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """Unweighted mean of per-class F1, so rare classes count as much as frequent ones.

    Classes are `labels` (default: every label in `y_true` or `y_pred`). A class with no true
    and no predicted example has no defined F1 and is left out of the mean, rather than counted
    as 0, so a label set taken from training does not lower the score of a test set lacking a
    class; with `labels=None` this equals scikit-learn's `f1_score(average="macro")`. A class
    with support but no prediction (or the reverse) scores 0, as scikit-learn's zero_division=0.
    """
    _check_paired(y_true, y_pred)
    classes = set(y_true) | set(y_pred) if labels is None else set(labels)
    tp = Counter(t for t, p in zip(y_true, y_pred, strict=True) if t == p)
    true_count, pred_count = Counter(y_true), Counter(y_pred)
    scores = [2 * tp[c] / (true_count[c] + pred_count[c]) for c in classes if true_count[c] + pred_count[c]]
    return sum(scores) / len(scores) if scores else 0.0


def entity_prf(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision, recall and F1 over all sentences (micro average), exact span and type.

    Returns `{"precision", "recall", "f1", "per_type": {type: {"precision", "recall", "f1",
    "support"}}}`, `support` being the number of true entities, as seqeval reports them.
    """
    _check_paired(true_tags, pred_tags)
    true: set[tuple[int, Span]] = set()
    pred: set[tuple[int, Span]] = set()
    for n, (sentence_true, sentence_pred) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if len(sentence_true) != len(sentence_pred):
            raise ValueError(f"sentence {n}: {len(sentence_true)} true tags "
                             f"but {len(sentence_pred)} predicted")
        true |= {(n, span) for span in entity_spans(sentence_true)}
        pred |= {(n, span) for span in entity_spans(sentence_pred)}
    per_type = {}
    for kind in sorted({span[0] for _, span in true | pred}):
        type_true = {item for item in true if item[1][0] == kind}
        type_pred = {item for item in pred if item[1][0] == kind}
        per_type[kind] = {**_prf(len(type_true & type_pred), len(type_true), len(type_pred)),
                          "support": len(type_true)}
    return {**_prf(len(true & pred), len(true), len(pred)), "per_type": per_type}


def recall_at_k(embeddings: np.ndarray, labels: Sequence[str], k: int) -> float:
    """Share of queries whose `k` nearest other items (by cosine) include one with the same label.

    Every item is a query against all the others. Rows must be unit-norm, so a dot product is
    the cosine. A query whose label occurs only once is skipped: nothing could be retrieved
    for it, and counting it would cap the score below 1 whatever the model. Uses O(n^2) memory.
    """
    labels_array = np.asarray(labels)
    if len(labels_array) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(labels_array)} labels")
    if not 1 <= k < len(labels_array):
        raise ValueError(f"k must be in [1, {len(labels_array) - 1}], got {k}")
    _, inverse, counts = np.unique(labels_array, return_inverse=True, return_counts=True)
    queries = np.flatnonzero(counts[inverse] > 1)
    if not len(queries):
        raise ValueError("no label occurs twice, so no query has anything to retrieve")
    similarity = embeddings[queries] @ embeddings.T
    similarity[np.arange(len(queries)), queries] = -np.inf  # an item does not retrieve itself
    top_k = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    hits = (labels_array[top_k] == labels_array[queries, None]).any(axis=1)
    return float(hits.mean())


def majority_baseline(train_labels: Sequence[str], test_labels: Sequence[str]) -> float:
    """Test accuracy of always predicting the most frequent training label (ties: first seen).

    The floor a fine-tuned classifier must clearly beat to show it learned anything.
    """
    if not train_labels:
        raise ValueError("no training labels")
    majority = Counter(train_labels).most_common(1)[0][0]
    return accuracy(test_labels, [majority] * len(test_labels))


def _prf(correct: int, n_true: int, n_pred: int) -> dict[str, float]:
    """Precision, recall and F1, each 0 where undefined (nothing predicted or nothing to find)."""
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _check_paired(y_true: Sequence, y_pred: Sequence) -> None:
    """Refuse empty or unequal inputs, which would otherwise give a silently wrong score."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("no labels to score")
