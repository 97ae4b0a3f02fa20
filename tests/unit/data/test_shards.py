from __future__ import annotations

from collections import Counter

import pytest

from lmforge.data.shards import read_shard, run_steps, write_shard
from lmforge.data.stats import AccountingError, check_accounting, merge_all
from lmforge.data.steps.base import Drop


class DropShort:
    name = "short"

    def apply(self, doc, counters):
        return Drop("too_short") if len(doc["text"]) < 3 else [doc]


class SplitInHalves:
    name = "split"

    def apply(self, doc, counters):
        counters["split"] += 1
        half = len(doc["text"]) // 2
        return [{**doc, "id": f"{doc['id']}#{k}", "text": part, "metadata": {"parent_id": doc["id"]}}
                for k, part in enumerate((doc["text"][:half], doc["text"][half:]))]


def test_run_steps_counts_every_document_once():
    docs = [{"id": str(i), "text": "x" * i, "source": "t", "metadata": {}} for i in range(6)]
    kept, removed, stats = run_steps(docs, [DropShort(), SplitInHalves()])
    assert [r["removed"] for r in removed] == [{"step": "short", "reason": "too_short"}] * 3
    assert len(kept) == 6 and {d["metadata"]["parent_id"] for d in kept} == {"3", "4", "5"}
    short, split = (s.to_dict() for s in stats)
    assert (short["in"], short["kept"], short["dropped"]) == (6, 3, {"too_short": 3})
    assert (split["in"], split["kept"], split["counters"]) == (3, 3, {"split": 3})
    merged = merge_all([[s.to_dict() for s in stats]] * 2)
    assert merged[0].seen == 12 and merged[1].counters["split"] == 6


def test_shards_round_trip_byte_identically(tmp_path):
    docs = [{"id": "a", "text": "héllo 世界", "source": "s", "metadata": {"k": 1}}]
    write_shard(tmp_path / "a.jsonl.gz", docs)
    write_shard(tmp_path / "b.jsonl.gz", docs)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert list(read_shard(tmp_path / "a.jsonl.gz")) == docs


def test_accounting_check_catches_a_lost_document():
    check_accounting(10, 7, Counter(malformed=1, too_short=2))
    with pytest.raises(AccountingError, match="10 input documents, 7 kept \\+ 2 removed"):
        check_accounting(10, 7, Counter(too_short=2))
