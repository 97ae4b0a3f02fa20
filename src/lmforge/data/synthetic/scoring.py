"""Score a curated dataset against the ground truth planted in the built-in corpus.

The generator records, per document, its language, which document it duplicates (exactly or
nearly) and every PII value it holds. Curation here is judged on what it could see: a planted
duplicate whose original was already removed for another reason is no longer a duplicate of
anything kept, so it leaves the dedup figures (it is counted in `not_reached`).

Curation does not know the truth exists: whoever curates the built-in corpus passes
`truth_scorer(...)` to `curate`, which puts the figures in stats.json and the report.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from lmforge.data.curate import Scorer, Scores
from lmforge.data.curate.shards import read_shard
from lmforge.data.sources import iter_sources

PLACEHOLDER_OF = {"email": "<EMAIL>", "phone": "<PHONE>", "ipv4": "<IP>", "ipv6": "<IP>", "card": "<CARD>"}


def find_truth(sources: Iterable[Path]) -> Path | None:
    """The built-in corpus keeps `truth.json` beside `documents.jsonl.gz`."""
    for source in sources:
        folder = source if source.is_dir() else source.parent
        if (folder / "truth.json").is_file():
            return folder / "truth.json"
    return None


def truth_scorer(sources: Iterable[Path]) -> Scorer | None:
    """The scorer of a curation of `sources`, if they are the built-in corpus (None otherwise)."""
    truth = find_truth(sources)
    return partial(score_curation, truth) if truth else None


def score_curation(truth_path: Path, dataset: Path) -> Scores:
    """`score_against_truth`'s figures, and the report section that presents them."""
    scores = score_against_truth(truth_path, dataset)
    return Scores(scores, "\n".join(["## Against the planted ground truth", "", *_score_lines(scores)]))


def load_truth(path: Path) -> dict[str, dict]:
    return {record["id"]: record for record in json.loads(path.read_text(encoding="utf-8"))["documents"]}


def score_against_truth(truth_path: Path, dataset: Path) -> dict[str, Any]:
    """Precision/recall of exact and near dedup and of PII removal, and language-ID accuracy."""
    truth = load_truth(truth_path)
    kept = _by_parent(iter_sources([dataset / "shards"]))
    removed = {r["id"]: r for p in sorted((dataset / "removed").glob("*.jsonl.gz")) for r in read_shard(p)}
    return {
        "exact_dedup": _dedup_scores(truth, removed, kept, "exact_dup_of", "exact_duplicate"),
        "near_dedup": _dedup_scores(truth, removed, kept, "near_dup_of", "near_duplicate"),
        "quality": _quality_scores(truth, removed),
        "pii": _pii_scores(truth, kept),
        "language_accuracy": _language_accuracy(truth, kept, removed),
    }


def _by_parent(docs: Iterable[dict]) -> dict[str, dict]:
    """Kept input documents with their chunks joined back (augmented copies left out), by id."""
    parts: dict[str, list[dict]] = defaultdict(list)
    for doc in docs:
        if doc["metadata"].get("augmented_from") is None:  # copies are not input documents
            parts[doc["metadata"].get("parent_id") or doc["id"]].append(doc)
    return {doc_id: {**chunks[0], "text": "\n".join(c["text"] for c in chunks)}
            for doc_id, chunks in parts.items()}


def _dedup_scores(truth: dict, removed: dict, kept: dict, truth_key: str, reason: str) -> dict[str, Any]:
    """A planted duplicate counts when it and its original both reached the dedup step."""
    def reached(doc_id: str) -> bool:
        return doc_id in kept or removed.get(doc_id, {}).get("removed", {}).get("step") in ("dedup", "pii",
                                                                                            "length")

    predicted = {i for i, r in removed.items() if r["removed"]["reason"] == reason}
    planted = {i for i, t in truth.items() if t.get(truth_key)}
    eligible = {i for i in planted if reached(i) and reached(truth[i][truth_key])}
    hits = predicted & eligible
    return {"planted": len(planted), "not_reached": len(planted - eligible), "removed": len(predicted),
            "recall": _ratio(len(hits), len(eligible)), "precision": _ratio(len(predicted & planted),
                                                                           len(predicted))}


def _quality_scores(truth: dict, removed: dict) -> dict[str, Any]:
    """Planted boilerplate/low-quality documents removed by a filter, and normal ones wrongly removed."""
    filters = ("normalise", "language", "quality", "length")
    by_filter = {i for i, r in removed.items() if r["removed"]["step"] in filters}
    bad = {i for i, t in truth.items() if t["kind"] != "normal"}
    normal = {i for i, t in truth.items() if t["kind"] == "normal"}
    return {"planted_bad": len(bad), "recall": _ratio(len(bad & by_filter), len(bad)),
            "precision": _ratio(len(bad & by_filter), len(by_filter & (bad | normal))),
            "normal_removed": _ratio(len(normal & by_filter), len(normal))}


def _pii_scores(truth: dict, kept: dict) -> dict[str, Any]:
    """Recall: planted values gone from kept text. Precision: placeholders matched by planted values."""
    planted, gone, placeholders, matched = Counter(), Counter(), Counter(), Counter()
    for doc_id, doc in kept.items():
        spans = truth.get(doc_id, {}).get("pii", [])
        per_placeholder = Counter()
        for span in spans:
            if span["type"] in PLACEHOLDER_OF:
                planted[span["type"]] += 1
                gone[span["type"]] += span["value"] not in doc["text"]
                per_placeholder[PLACEHOLDER_OF[span["type"]]] += 1
        for tag in set(PLACEHOLDER_OF.values()):
            found = doc["text"].count(tag)
            placeholders[tag] += found
            matched[tag] += min(found, per_placeholder[tag])
    recall = {t: _ratio(gone[t], planted[t]) for t in sorted(planted)}
    precision = {tag: _ratio(matched[tag], placeholders[tag]) for tag in sorted(placeholders)}
    return {"planted": dict(planted), "recall": recall, "placeholder_precision": precision,
            "note": "person names need the model tier; the regex tier does not look for them"}


def _language_accuracy(truth: dict, kept: dict, removed: dict) -> float | None:
    seen = [(doc["metadata"].get("lang"), truth[i]["lang"]) for i, doc in [*kept.items(), *removed.items()]
            if i in truth and truth[i].get("lang") and doc.get("metadata", {}).get("lang")]
    return _ratio(sum(a == b for a, b in seen), len(seen))


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _score_lines(scores: dict[str, Any]) -> list[str]:
    lines = ["| check | recall | precision | planted |", "|---|---:|---:|---:|"]
    for key in ("exact_dedup", "near_dedup"):
        s = scores[key]
        lines.append(f"| {key.replace('_', ' ')} | {_pct(s['recall'])} | {_pct(s['precision'])} | "
                     f"{s['planted']} ({s['not_reached']} removed earlier) |")
    quality = scores["quality"]
    lines.append(f"| low quality / boilerplate filtered | {_pct(quality['recall'])} | "
                 f"{_pct(quality['precision'])} | {quality['planted_bad']} |")
    pii = scores["pii"]
    for kind, recall in pii["recall"].items():
        lines.append(f"| PII {kind} | {_pct(recall)} | | {pii['planted'][kind]} |")
    lines += ["", "Placeholder precision: " + ", ".join(f"{k} {_pct(v)}" for k, v in
                                                          pii["placeholder_precision"].items()),
              f"Normal documents removed by a filter: {_pct(quality['normal_removed'])}. "
              f"Language-ID accuracy: {_pct(scores['language_accuracy'])}. {pii['note']}."]
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
