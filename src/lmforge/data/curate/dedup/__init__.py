"""Deduplication, exact (MD5 of the normalised text) and near (MinHash LSH), all of it here.

Dedup spans shards, so it runs as its own stage between the per-shard ones:
- `minhash`: shingles, MinHash signatures and LSH band keys (per shard, in the workers);
- `decide`: exact keys, and the one global decision over every document's keys;
- `stage`: the stage's files (`*.keys.npz` per shard, `dedup.json`) and the local decision;
- `shuffle`: the same decision as a map/reduce shuffle, for the Ray executor;
- `step`: the settings, and the finishing step that drops what was decided.
"""
