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


def test_tiny_corpus_still_gets_a_validation_document(tmp_path, tokenizer):
    index = pack_documents(DOCS[:2], tokenizer, tmp_path / "two", val_fraction=1e-9)
    assert index["splits"]["train"]["n_docs"] == index["splits"]["val"]["n_docs"] == 1
    index = pack_documents(DOCS[:1], tokenizer, tmp_path / "one", val_fraction=1e-9)
    assert index["splits"]["val"] == {"n_tokens": 0, "n_docs": 0, "shards": []}


def test_empty_corpus_and_existing_folder_are_errors(tmp_path, tokenizer):
    with pytest.raises(DataError, match="no documents to pack"):
        pack_documents([], tokenizer, tmp_path / "empty")
    assert not (tmp_path / "empty").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(ArtifactError, match="already exists"):
        pack_documents(DOCS, tokenizer, tmp_path / "taken")
