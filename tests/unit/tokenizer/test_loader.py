"""TokenStream over several shards, and Transformer-XL batches: continuity, purity, rank slices."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lmforge.artifacts import ArtifactError
from lmforge.data import DataError
from lmforge.tokenizer import SegmentBatches, TokenStream

N = 10_007


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """A split whose token at position p is p, cut into three unequal shards."""
    folder = tmp_path_factory.mktemp("tokens")
    cuts = [0, 3000, 3001, N]
    shards = []
    for k, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        shards.append(f"train_{k:05d}.bin")
        np.arange(a, b, dtype="<u2").tofile(folder / shards[-1])
    np.arange(50, dtype="<u2").tofile(folder / "val_00000.bin")
    index = {"dtype": "uint16", "vocab_size": 65536, "eos_id": 3,
             "splits": {"train": {"n_tokens": N, "n_docs": 3, "shards": shards},
                        "val": {"n_tokens": 50, "n_docs": 1, "shards": ["val_00000.bin"]}}}
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def test_stream_is_the_concatenation_of_its_shards(tokens):
    stream = TokenStream(tokens, "train")
    assert len(stream) == N
    for start, stop in [(0, N), (2990, 3010), (3000, 3001), (5, 5), (N - 1, N)]:
        assert stream.slice(start, stop).tolist() == list(range(start, stop))
    with pytest.raises(IndexError):
        stream.slice(0, N + 1)


def test_batches_continue_rows_and_shift_targets(tokens):
    batches = SegmentBatches(TokenStream(tokens, "train"), batch_size=4, seq_len=16)
    stream_len = (N - 1) // 4
    assert batches.n_segments == stream_len // 16
    x0, y0 = batches.batch(0)
    assert x0.dtype == y0.dtype == torch.long and x0.shape == y0.shape == (4, 16)
    for i in range(batches.n_segments - 1):
        x, y = batches.batch(i)
        nx, _ = batches.batch(i + 1)
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert torch.equal(nx[:, 0], y[:, -1])
        assert torch.equal(x[:, 0], torch.arange(4) * stream_len + i * 16)


def test_batch_is_a_pure_function_of_the_step(tokens):
    batches = SegmentBatches(TokenStream(tokens, "train"), batch_size=4, seq_len=16)
    later = batches.batch(7)
    batches.batch(3)
    assert all(torch.equal(a, b) for a, b in zip(later, batches.batch(7), strict=True))
    wrapped = batches.batch(batches.n_segments)
    assert all(torch.equal(a, b) for a, b in zip(batches.batch(0), wrapped, strict=True))


def test_ranks_split_the_global_batch(tokens):
    stream = TokenStream(tokens, "train")
    whole = SegmentBatches(stream, batch_size=6, seq_len=8)
    parts = [SegmentBatches(stream, batch_size=6, seq_len=8, rank=r, world_size=3) for r in range(3)]
    for i in (0, 5):
        xs = [p.batch(i)[0] for p in parts]
        assert all(x.shape == (2, 8) for x in xs)
        assert torch.equal(torch.cat(xs), whole.batch(i)[0])
    seen = [set(p.batch(i)[0].flatten().tolist()) for p in parts for i in range(p.n_segments)]
    assert sum(map(len, seen)) == len(set().union(*seen))


def test_too_small_split_and_bad_ranks_are_explained(tokens):
    val = TokenStream(tokens, "val")
    needs = r"split 'val' .* has 50 tokens, but batch_size 4 x seq_len 16 needs at least 65"
    with pytest.raises(DataError, match=needs):
        SegmentBatches(val, batch_size=4, seq_len=16)
    assert SegmentBatches(val, batch_size=7, seq_len=7).n_segments == 1
    with pytest.raises(ValueError, match="split evenly"):
        SegmentBatches(TokenStream(tokens, "train"), batch_size=6, seq_len=8, rank=0, world_size=4)


def test_missing_folder_or_split(tmp_path, tokens):
    with pytest.raises(ArtifactError, match="no index.json"):
        TokenStream(tmp_path, "train")
    with pytest.raises(ArtifactError, match="no split 'test' .*have train, val"):
        TokenStream(tokens, "test")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda folder: (folder / "index.json").write_text('{"dtype": '), r"index.json:1: not valid JSON"),
    (lambda folder: (folder / "index.json").write_text('{"dtype": "uint16"}'), r"index.json: missing eos_id"),
    (lambda folder: (folder / "val_00000.bin").unlink(), r"val_00000.bin: no such file"),
])
def test_damaged_token_folder_is_named(tmp_path, tokens, damage, message):
    """A token folder that lost or broke a file fails with an ArtifactError naming that file."""
    folder = tmp_path / "copy"
    shutil.copytree(tokens, folder)
    damage(folder)
    with pytest.raises(ArtifactError, match=message):
        TokenStream(folder, "val")
