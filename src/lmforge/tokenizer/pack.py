"""Pack documents into flat token shards: each document's tokens then `<eos>`, back to back.

Training reads these with `np.memmap` (see `loader.py`), so a corpus larger than memory costs
nothing to open. A document goes to validation when a hash of its id falls below
`val_fraction`: the split is the same on every run and in any input order, and adding documents
never moves an old one across. A corpus of fewer than `1 / val_fraction` documents (one text
file) is split at the tail of its token stream instead, where a split by documents would leave
validation empty.

Layout of the output folder:
- `train_00000.bin`, `val_00000.bin`, ...: raw little-endian token ids (uint16, or uint32 when
  the vocabulary exceeds 65536); a shard is closed once it holds `shard_tokens`, and documents
  never straddle two shards.
- `train_00000.docs.npy`, ...: int64 start offset of every document within its shard.
- `index.json`: `{dtype, vocab_size, eos_id, val_split, splits: {train|val: {n_tokens, n_docs,
  shards}}}`; `val_split` is "documents" or "tail" (see `pack_documents`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from lmforge.artifacts import atomic_dir, atomic_write_json
from lmforge.data.documents import DataError
from lmforge.tokenizer.train import special_ids

ENCODE_BATCH = 1000


def pack_documents(docs: Iterable[dict[str, Any]], tokenizer: Tokenizer, out_dir: Path,
                   val_fraction: float = 0.05, shard_tokens: int = 50_000_000) -> dict[str, Any]:
    """Encode `docs` into a new folder `out_dir` (built aside, then renamed); returns the index.

    With at least `1 / val_fraction` documents (enough that validation expects one) the split is
    by documents, and validation gets at least one: the one whose hash is lowest. With fewer (a
    corpus that is one text file, say) a split by documents would give validation everything or
    nothing, so validation is the last `val_fraction` of the token stream instead, cutting the
    document it starts in; `index["val_split"]` says which ("documents" or "tail"). Deciding
    needs the first `1 / val_fraction` documents in memory, so keep the fraction sensible.
    """
    eos = special_ids(tokenizer)["eos"]
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")
    enough = math.ceil(1 / val_fraction)
    with atomic_dir(out_dir) as tmp:
        train = _ShardWriter(tmp, "train", dtype, shard_tokens)
        val = _ShardWriter(tmp, "val", dtype, shard_tokens)
        encoded = _encode(docs, tokenizer, eos, dtype)
        first = list(islice(encoded, enough))
        if not first:
            raise DataError(f"{out_dir}: no documents to pack")
        if len(first) < enough:
            _split_tail([tokens for _, tokens in first], train, val, val_fraction)
        else:
            _split_by_hash(chain(first, encoded), train, val, val_fraction)
        index = {"dtype": dtype.name, "vocab_size": vocab_size, "eos_id": eos,
                 "val_split": "tail" if len(first) < enough else "documents",
                 "splits": {"train": train.close(), "val": val.close()}}
        atomic_write_json(tmp / "index.json", index)
    return index


def _split_by_hash(encoded: Iterable[tuple[str, np.ndarray]], train: _ShardWriter, val: _ShardWriter,
                   val_fraction: float) -> None:
    """Whole documents to validation by the hash of their id; the lowest-hash train document
    is held back and goes to validation if nothing else did."""
    held: tuple[float, np.ndarray] | None = None
    for doc_id, tokens in encoded:
        score = _val_score(doc_id)
        if score < val_fraction:
            val.add(tokens)
        elif held is None or score < held[0]:
            if held is not None:
                train.add(held[1])
            held = (score, tokens)
        else:
            train.add(tokens)
    if held is not None:
        (val if val.n_docs == 0 and train.n_docs > 0 else train).add(held[1])


def _split_tail(docs: list[np.ndarray], train: _ShardWriter, val: _ShardWriter, val_fraction: float) -> None:
    """The last `val_fraction` of the tokens (at least one) to validation, the rest to train."""
    total = sum(len(tokens) for tokens in docs)
    cut = total - max(1, round(val_fraction * total))
    start = 0
    for tokens in docs:
        end = start + len(tokens)
        if end <= cut:
            train.add(tokens)
        elif start >= cut:
            val.add(tokens)
        else:
            train.add(tokens[:cut - start])
            val.add(tokens[cut - start:])
        start = end


def _val_score(doc_id: str) -> float:
    """A uniform number in [0, 1) fixed by the id alone."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _encode(docs: Iterable[dict[str, Any]], tokenizer: Tokenizer, eos: int,
            dtype: np.dtype) -> Iterator[tuple[str, np.ndarray]]:
    """(id, tokens + eos) per document; batches let `tokenizers` use every core.

    The first batch is read before the progress bar opens, so input that cannot be read at all
    fails with its one-line error and no bar in front of it.
    """
    docs = iter(docs)
    batch = list(islice(docs, ENCODE_BATCH))
    with tqdm(desc="pack", unit="doc") as bar:
        while batch:
            encodings = tokenizer.encode_batch([doc["text"] for doc in batch], add_special_tokens=False)
            for doc, encoding in zip(batch, encodings, strict=True):
                yield doc["id"], np.array([*encoding.ids, eos], dtype=dtype)
            bar.update(len(batch))
            batch = list(islice(docs, ENCODE_BATCH))


class _ShardWriter:
    """Appends documents to `{split}_{k:05d}.bin`, starting a new shard once one is full."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.folder, self.split, self.dtype, self.shard_tokens = folder, split, dtype, shard_tokens
        self.shards: list[str] = []
        self.n_tokens = self.n_docs = 0
        self._file: BinaryIO | None = None
        self._starts: list[int] = []
        self._size = 0

    def add(self, tokens: np.ndarray) -> None:
        if self._file is None or self._size >= self.shard_tokens:
            self._finish_shard()
            self.shards.append(f"{self.split}_{len(self.shards):05d}.bin")
            self._file = open(self.folder / self.shards[-1], "wb")  # noqa: SIM115 -- closed in _finish_shard
        self._starts.append(self._size)
        tokens.tofile(self._file)
        self._size += len(tokens)
        self.n_tokens += len(tokens)
        self.n_docs += 1

    def close(self) -> dict[str, Any]:
        self._finish_shard()
        return {"n_tokens": self.n_tokens, "n_docs": self.n_docs, "shards": self.shards}

    def _finish_shard(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        starts = np.array(self._starts, dtype=np.int64)
        np.save(self.folder / self.shards[-1].replace(".bin", ".docs.npy"), starts)
        self._starts, self._size = [], 0
