from __future__ import annotations

import pytest

from lmforge.data.curate.base import Drop
from lmforge.data.curate.shards import read_shard, run_steps, write_shard
from lmforge.data.curate.stats import AccountingError, check_accounting, merge_all


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


INPUT = ["a", "b", "c", "d", "e", "f"]


def test_accounting_passes_when_every_input_id_is_kept_or_removed_once():
    check_accounting(INPUT, ["a", "c", "d"], ["b", "e", "f"])
    check_accounting(INPUT, [], INPUT)
    check_accounting(iter(INPUT), iter(["f", "e", "d", "c", "b"]), iter(["a"]))  # order is free
    check_accounting(["x", "x"], ["x"], ["x"])  # a (malformed) id read twice, accounted twice


@pytest.mark.parametrize(("kept", "removed", "message"), [
    # counts balance (3 + 3 = 6) in every case: only the ids show what is wrong
    (["a", "c", "c"], ["b", "e", "f"], "lost: d; written twice or never input: c; kept and removed: none"),
    (["a", "c", "d"], ["b", "e", "e"], "lost: f; written twice or never input: e;"),
    (["a", "c", "d"], ["b", "d", "f"], "lost: e; written twice or never input: d; kept and removed: d"),
    (["a", "c", "d"], ["b", "e", "z"], "lost: f; written twice or never input: z;"),
    (["a", "c"], ["b", "e", "f"], "6 input documents, 2 kept \\+ 3 removed = 5; lost: d;"),
])
def test_accounting_catches_lost_doubled_and_unknown_ids_even_when_counts_balance(kept, removed, message):
    with pytest.raises(AccountingError, match=message):
        check_accounting(INPUT, kept, removed)


def test_accounting_error_names_a_few_ids_not_all():
    with pytest.raises(AccountingError, match="lost: 0, 1, 10, 11, 12 and 95 more;"):
        check_accounting([str(i) for i in range(100)], [], [])
