"""Packing: every document comes back as its tokens plus <eos>; the split is fixed by the ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from lmforge.artifacts import ArtifactError
from lmforge.data import DataError
from lmforge.tokenizer import TokenStream, pack_documents, train_tokenizer

EOS = 3
DOCS = [{"id": f"d{i}", "text": f"Document {i}: the team won {i} games in 北京 ({'x' * (i % 7)})."}
        for i in range(300)]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer((d["text"] for d in DOCS), vocab_size=300, show_progress=False)


def split_docs(folder, split: str) -> list[np.ndarray]:
    """The documents of a split, cut at the offsets of the *.docs.npy files."""
    out = []
    for shard in json.loads((folder / "index.json").read_text())["splits"][split]["shards"]:
        tokens = np.fromfile(folder / shard, dtype="<u2")
        starts = np.load(folder / shard.replace(".bin", ".docs.npy"))
        out += np.split(tokens, starts[1:])
    return out


def decoded(tokenizer, docs: list[np.ndarray]) -> list[str]:
    return [tokenizer.decode(d[:-1].tolist()) for d in docs]


def test_pack_gives_back_every_document(tmp_path, tokenizer):
    index = pack_documents(DOCS, tokenizer, tmp_path / "tok", val_fraction=0.1, shard_tokens=2000)
    assert index["dtype"] == "uint16" and index["eos_id"] == EOS and index["vocab_size"] == 300
    train, val = index["splits"]["train"], index["splits"]["val"]
    assert len(train["shards"]) > 1 and train["n_docs"] + val["n_docs"] == len(DOCS)
    assert 10 <= val["n_docs"] <= 50
    texts = {d["text"] for d in DOCS}
    seen: list[str] = []
    for split in ("train", "val"):
        docs = split_docs(tmp_path / "tok", split)
        assert all(d[-1] == EOS and EOS not in d[:-1] for d in docs)
        for doc in docs:
            assert doc[:-1].tolist() == tokenizer.encode(tokenizer.decode(doc[:-1].tolist())).ids
        stream = TokenStream(tmp_path / "tok", split)
        assert np.array_equal(stream.slice(0, len(stream)), np.concatenate(docs))
        assert len(stream) == index["splits"][split]["n_tokens"]
        seen += decoded(tokenizer, docs)
    assert sorted(seen) == sorted(texts)


def test_validation_split_ignores_order(tmp_path, tokenizer):
    pack_documents(DOCS, tokenizer, tmp_path / "a", val_fraction=0.2)
    pack_documents(DOCS[::-1], tokenizer, tmp_path / "b", val_fraction=0.2)
    a, b = (decoded(tokenizer, split_docs(tmp_path / name, "val")) for name in "ab")
    assert sorted(a) == sorted(b) and a


def test_a_small_corpus_still_gets_a_validation_document(tmp_path, tokenizer):
    """10 documents at val_fraction 0.1: a split by documents, which may draw none for validation."""
    index = pack_documents(DOCS[:10], tokenizer, tmp_path / "ten", val_fraction=0.1)
    assert index["val_split"] == "documents"
    assert index["splits"]["val"]["n_docs"] >= 1 and index["splits"]["train"]["n_docs"] >= 1


@pytest.mark.parametrize(("n_docs", "val_fraction"), [(1, 0.05), (3, 0.05), (9, 0.1), (2, 1e-6)])
def test_too_few_documents_hold_out_the_tail_of_the_stream(tmp_path, tokenizer, n_docs, val_fraction):
    """Fewer than 1/val_fraction documents: validation is the last val_fraction of the tokens (at least
    one), cut out of the stream in order, and the index says so."""
    index = pack_documents(DOCS[:n_docs], tokenizer, tmp_path / "tail", val_fraction=val_fraction)
    stream = np.concatenate([tokenizer.encode(d["text"]).ids + [EOS] for d in DOCS[:n_docs]])
    train, val = (TokenStream(tmp_path / "tail", split) for split in ("train", "val"))
    assert index["val_split"] == "tail"
    assert len(val) == max(1, round(val_fraction * len(stream)))
    assert np.array_equal(np.concatenate([train.slice(0, len(train)), val.slice(0, len(val))]), stream)


def test_empty_corpus_and_existing_folder_are_errors(tmp_path, tokenizer):
    with pytest.raises(DataError, match="no documents to pack"):
        pack_documents([], tokenizer, tmp_path / "empty")
    assert not (tmp_path / "empty").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(ArtifactError, match="already exists"):
        pack_documents(DOCS, tokenizer, tmp_path / "taken")


def test_one_text_file_packs_with_a_validation_split(tmp_path, shared_data, capsys):
    """tinyshakespeare is one document: validation is the tail of its tokens, enough to pretrain on."""
    from lmforge.artifacts import read_manifest
    from lmforge.data import read_documents
    from lmforge.tokenizer import PackConfig, SegmentBatches, run_pack, train_tokenizer

    corpus = shared_data / "tinyshakespeare" / "input.txt"
    texts = (doc["text"] for doc in read_documents(corpus))
    train_tokenizer(texts, vocab_size=400, show_progress=False).save(str(tmp_path / "tokenizer.json"))
    config = PackConfig(data=[corpus], tokenizer=tmp_path / "tokenizer.json", out=tmp_path / "tokens")
    tokens = run_pack(config)
    said = capsys.readouterr().out
    manifest = read_manifest(tokens)
    n_train, n_val = manifest["tokens"]["train"], manifest["tokens"]["val"]
    assert manifest["val_split"] == json.loads((tokens / "index.json").read_text())["val_split"] == "tail"
    assert "validation is the last" in said and f"{n_val:,} tokens" in said
    assert n_val == round(0.05 * (n_train + n_val)) > 10_000
    x, _ = SegmentBatches(TokenStream(tokens, "val"), batch_size=16, seq_len=64).batch(0)
    assert x.shape == (16, 64)
