"""Global deduplication inside the curation stages: keys per shard, one decision, one drop step.

Workers write each shard's exact keys and MinHash band keys to `*.keys.npz`; one pass over all
of them (in shard order) decides the duplicates; `step.DedupDrop` drops them. Keys are small
(16 bytes + 8 per hash and per band: about 1 KB per document), so one pass holds them all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmforge.artifacts import atomic_write_json
from lmforge.data.curate.dedup.decide import DedupDecision, decide_duplicates, exact_key
from lmforge.data.curate.dedup.minhash import MinHasher, probability_curve
from lmforge.data.curate.dedup.step import DedupSettings


def describe(settings: DedupSettings) -> str:
    if not settings.near:
        return "near dedup off"
    return (f"MinHash LSH: {settings.bands} bands x {settings.rows} rows, {settings.ngram}-gram shingles\n"
            + probability_curve(settings.bands, settings.rows))


def _hasher(settings: DedupSettings) -> MinHasher:
    return MinHasher(bands=settings.bands, rows=settings.rows, ngram=settings.ngram, seed=settings.seed)


def write_keys(path: Path, docs: list[dict], settings: DedupSettings) -> None:
    """Exact keys, MinHash signatures and band keys of one shard's documents, in shard order."""
    texts = [doc["text"] for doc in docs]
    hasher = _hasher(settings)
    exact = np.array([exact_key(t) for t in texts], dtype="S16") if settings.exact else np.empty(0, "S16")
    signatures = (hasher.signatures(texts) if settings.near and texts
                  else np.empty((0, hasher.num_perm), np.uint64))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, ids=np.array([doc["id"] for doc in docs], dtype=str), exact=exact,
             signatures=signatures, bands=hasher.band_keys(signatures))
    tmp.replace(path)


def decide(key_files: list[Path], out: Path) -> None:
    """Decide every duplicate across all shards once; `out` doubles as the stage's done marker."""
    if out.is_file():
        return
    ids, parts = [], {"exact": [], "signatures": [], "bands": []}
    for path in key_files:
        with np.load(path) as keys:
            ids += keys["ids"].tolist()
            for name, part in parts.items():
                part.append(keys[name])
    joined = {name: np.concatenate(part) if sum(map(len, part)) else None for name, part in parts.items()}
    decisions = decide_duplicates(ids, joined["exact"], joined["bands"], joined["signatures"]) if ids else []
    write_decisions(out, decisions)


def write_decisions(out: Path, decisions: list[DedupDecision]) -> None:
    """`dedup.json`: removed id -> reason and kept id, in global order (the Ray shuffle writes it too)."""
    atomic_write_json(out, {d.doc_id: {"reason": d.reason, "kept_id": d.kept_id} for d in decisions})


def load_decisions(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text(encoding="utf-8"))
