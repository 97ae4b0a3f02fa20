"""The global dedup as a shuffle by key: `stage.decide`'s decision, without one process
holding every document's band keys.

A document is named by its global order, `shard << 32 | row` (key files in the order the local
path reads them, then position in the shard), which sorts exactly as the local path's positions
do. Two rounds of map -> P partitions -> reduce, run by a `Shuffle` (Ray tasks in
lmforge.data.curate.ray_executor):
  exact  map: (exact key, order) of each document, partitioned by the key;
         reduce: every duplicate with the first order of its key.
  near   map: (band, band key, order) of each document that is not an exact duplicate (near
         dedup runs on what exact dedup left), partitioned by (band, key);
         reduce: per band, each bucket member linked to the bucket's first and previous member
         (`decide.bucket_links`, the local path's own linking).
The driver verifies the candidate pairs on their documents' signatures only and clusters them
with `decide.near_keepers`, so the first document in global order stays, as it does locally.
Reducers sort their records by order and the driver takes the pairs' set, so neither P nor the
order in which tasks finish can change `dedup.json`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from lmforge.data.curate.dedup.decide import DedupDecision, bucket_links, near_keepers
from lmforge.data.curate.dedup.stage import write_decisions

EXACT = np.dtype([("key", "S16"), ("order", "<i8")])
BAND = np.dtype([("band", "<u2"), ("key", "<u8"), ("order", "<i8")])
ROW = (1 << 32) - 1

MapFn = Callable[..., list[np.ndarray]]
ReduceFn = Callable[..., np.ndarray]
Shuffle = Callable[[MapFn, list[tuple], ReduceFn], list[np.ndarray]]
"""shuffle(map_fn, calls, reduce_fn): `map_fn(*call, partitions)` for every call, each returning one
array per partition, then `reduce_fn(*arrays of partition p)` for every p; the reducers' results."""


def decide(key_files: list[Path], out: Path, shuffle: Shuffle) -> None:
    """Decide every duplicate across all shards; `out` doubles as the stage's done marker."""
    if out.is_file():
        return
    removed = _removed(key_files, shuffle) if key_files else {}
    ids = _ids(key_files, {*removed, *(keeper for _, keeper in removed.values())})
    write_decisions(out, [DedupDecision(ids[doc], reason, ids[keeper])
                          for doc, (reason, keeper) in removed.items()])


def _removed(key_files: list[Path], shuffle: Shuffle) -> dict[int, tuple[str, int]]:
    """order -> (reason, order of the copy that stays) of every duplicate, in global order."""
    calls = [(path, shard) for shard, path in enumerate(key_files)]
    exact = np.concatenate(shuffle(_exact_records, calls, _exact_keepers))  # rows (copy, keeper)
    copies = exact[:, 0]  # left out of the band buckets: near dedup runs on what exact dedup left
    band_calls = [(path, shard, copies[copies >> 32 == shard]) for path, shard in calls]
    pairs = np.concatenate(shuffle(_band_records, band_calls, _bucket_pairs))
    survivor = _near_survivors(key_files, pairs)
    removed = {doc: ("near_duplicate", keeper) for doc, keeper in survivor.items() if keeper != doc}
    # an exact copy names its keeper's near-cluster survivor, as in `decide.decide_duplicates`
    removed |= {doc: ("exact_duplicate", survivor.get(keeper, keeper)) for doc, keeper in exact.tolist()}
    return dict(sorted(removed.items()))


def _near_survivors(key_files: list[Path], pairs: np.ndarray) -> dict[int, int]:
    """order -> first order of its near-duplicate cluster, for every document of a candidate pair;
    only these documents' signatures are read, to verify the pairs."""
    pairs = np.unique(pairs, axis=0)
    nodes = np.unique(pairs)
    signatures = _gather(key_files, "signatures", nodes)
    keepers = nodes[near_keepers(len(nodes), np.searchsorted(nodes, pairs), signatures)]
    return dict(zip(nodes.tolist(), keepers.tolist(), strict=True))


def _orders(shard: int, n: int) -> np.ndarray:
    return (shard << 32) | np.arange(n, dtype=np.int64)


def _ids(key_files: list[Path], orders: set[int]) -> dict[int, str]:
    named = np.array(sorted(orders), dtype=np.int64)
    return dict(zip(named.tolist(), _gather(key_files, "ids", named).tolist(), strict=True))


def _gather(key_files: list[Path], name: str, orders: np.ndarray) -> np.ndarray:
    """Rows `name` of the documents at `orders` (sorted), reading each shard's key file once."""
    shards = orders >> 32
    parts = []
    for shard in np.unique(shards):
        with np.load(key_files[shard]) as keys:
            parts.append(keys[name][orders[shards == shard] & ROW])
    return np.concatenate(parts) if parts else np.empty(0)


def _exact_records(path: Path, shard: int, partitions: int) -> list[np.ndarray]:
    """Map of the exact round: (exact key, order) of each document, partitioned by the key."""
    with np.load(path) as keys:
        exact = keys["exact"]
    records = np.empty(len(exact), EXACT)
    records["key"], records["order"] = exact, _orders(shard, len(exact))
    return _partitioned(records, exact.view("<u8")[::2], partitions)  # the key's first 8 bytes


def _exact_keepers(*parts: np.ndarray) -> np.ndarray:
    """Reduce of the exact round: int64[k, 2] (duplicate, first order with the same key)."""
    records = _by_order(parts)
    _, first, inverse = np.unique(records["key"], return_index=True, return_inverse=True)
    keepers = records["order"][first[inverse]]
    copies = keepers != records["order"]
    return np.stack([records["order"][copies], keepers[copies]], axis=1)


def _band_records(path: Path, shard: int, exact_copies: np.ndarray, partitions: int) -> list[np.ndarray]:
    """Map of the near round: (band, band key, order) of each document that is not an exact copy,
    partitioned by (band, key) so that every bucket meets in one reducer."""
    with np.load(path) as keys:
        bands = keys["bands"]
    orders = _orders(shard, len(bands))
    left = ~np.isin(orders, exact_copies)
    records = np.empty((int(left.sum()), bands.shape[1]), BAND)
    records["band"] = np.arange(bands.shape[1])
    records["key"] = bands[left]
    records["order"] = orders[left, None]
    records = records.ravel()
    return _partitioned(records, records["key"] + records["band"], partitions)


def _bucket_pairs(*parts: np.ndarray) -> np.ndarray:
    """Reduce of the near round: int64[m, 2] candidate pairs (earlier, later order) of each band."""
    records = _by_order(parts)
    pairs = [np.empty((0, 2), dtype=np.int64)]
    for band in np.unique(records["band"]):
        in_band = records[records["band"] == band]
        earlier, later = bucket_links(in_band["key"])
        pairs.append(np.stack([in_band["order"][earlier], in_band["order"][later]], axis=1))
    return np.concatenate(pairs)


def _partitioned(records: np.ndarray, hashes: np.ndarray, partitions: int) -> list[np.ndarray]:
    """`records` split by hash modulo `partitions` (the keys are hashes already, so this spreads them)."""
    partition = hashes % np.uint64(partitions)
    return [records[partition == p] for p in range(partitions)]


def _by_order(parts: tuple[np.ndarray, ...]) -> np.ndarray:
    """One partition's records in global order, however its map tasks' outputs arrived."""
    records = np.concatenate(parts)
    return records[np.argsort(records["order"], kind="stable")]
