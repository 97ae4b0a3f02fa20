"""Read packed token shards back: a flat view of one split, and Transformer-XL batches over it.

`SegmentBatches.batch(i)` is a pure function of the step `i`: resuming at step N needs no
loader state, only N, and gives exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.artifacts import ArtifactError
from lmforge.data.documents import DataError
from lmforge.errors import READ_ERRORS, unreadable

INDEX_KEYS = ("dtype", "eos_id", "splits")


class TokenStream:
    """One split of a packed token folder as a single sequence; shards are memory-mapped."""

    def __init__(self, tokens_dir: str | Path, split: str) -> None:
        self.tokens_dir, self.split = Path(tokens_dir), split
        index = read_index(self.tokens_dir)
        if split not in index["splits"]:
            raise ArtifactError(f"{self.tokens_dir}: no split {split!r} (have {', '.join(index['splits'])})")
        self.dtype = np.dtype(index["dtype"]).newbyteorder("<")
        self.eos_id: int = index["eos_id"]
        self.shards = [self._open_shard(name) for name in index["splits"][split]["shards"]]
        self.offsets = np.cumsum([0] + [len(shard) for shard in self.shards])
        """offsets[k] is the position of shard k's first token in the whole split."""

    def _open_shard(self, name: str) -> np.memmap:
        try:
            return np.memmap(self.tokens_dir / name, dtype=self.dtype, mode="r")
        except (*READ_ERRORS, ValueError) as err:  # ValueError: numpy cannot map an empty file
            raise ArtifactError(unreadable(self.tokens_dir / name, err, "a token shard listed in "
                                                                       "index.json")) from None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the split, copied out of the shards they span."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"slice [{start}, {stop}) outside split {self.split!r} of {len(self)} tokens")
        parts = []
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while start < stop:
            end = min(stop, int(self.offsets[shard + 1]))
            base = int(self.offsets[shard])
            parts.append(self.shards[shard][start - base:end - base])
            start, shard = end, shard + 1
        return np.concatenate(parts) if parts else np.empty(0, dtype=self.dtype)


def read_index(tokens_dir: Path) -> dict[str, Any]:
    """The index.json of a token folder, checked for the keys a reader needs."""
    index_file = tokens_dir / "index.json"
    if not index_file.is_file():
        raise ArtifactError(f"{tokens_dir}: no index.json (expected a folder made by "
                            "`lmforge tokenizer pack`)")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except READ_ERRORS as err:
        raise ArtifactError(unreadable(index_file, err, "a token index")) from None
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{index_file}:{err.lineno}: not valid JSON ({err.msg})") from None
    missing = [key for key in INDEX_KEYS if not isinstance(index, dict) or key not in index]
    if missing:
        raise ArtifactError(f"{index_file}: missing {', '.join(missing)} (expected the index written by "
                            "`lmforge tokenizer pack`)")
    return index


class SegmentBatches:
    """Transformer-XL batches: the split is cut into `batch_size` contiguous streams s_b, and
    batch i holds segment i of each, x[b] = s_b[iT:(i+1)T], y[b] = s_b[iT+1:(i+1)T+1].

    Row b of batch i+1 continues row b of batch i, which is what lets the model carry its
    recurrence memory from one batch to the next. Steps past `n_segments` wrap to a new epoch.
    With `world_size` > 1, rank r reads only its own `batch_size // world_size` streams, so the
    ranks together see the global batch and no token twice. The tail that does not fill a
    segment in every stream is not used.
    """

    def __init__(self, stream: TokenStream, batch_size: int, seq_len: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size <= 0 or seq_len <= 0:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
        if not 0 <= rank < world_size or batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must split evenly over world_size {world_size} "
                             f"and rank {rank} must be in [0, {world_size})")
        self.stream, self.seq_len = stream, seq_len
        self.stream_len = (len(stream) - 1) // batch_size
        self.n_segments = self.stream_len // seq_len
        if self.n_segments < 1:
            raise DataError(f"split {stream.split!r} of {stream.tokens_dir} has {len(stream)} tokens, but "
                             f"batch_size {batch_size} x seq_len {seq_len} needs at least "
                             f"{batch_size * seq_len + 1}; use a smaller batch or sequence, or more data")
        local = batch_size // world_size
        self.rows = range(rank * local, (rank + 1) * local)

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) LongTensors of shape [batch_size // world_size, seq_len] for step `i`."""
        offset = (i % self.n_segments) * self.seq_len
        starts = [row * self.stream_len + offset for row in self.rows]
        chunks = np.stack([self.stream.slice(s, s + self.seq_len + 1) for s in starts]).astype(np.int64)
        return torch.from_numpy(chunks[:, :-1].copy()), torch.from_numpy(chunks[:, 1:].copy())
