"""The tokenizer stages end to end on the built-in corpus: folders, manifests, strict configs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lmforge.artifacts import load_tokenizer, read_manifest
from lmforge.config import ConfigError, build
from lmforge.data.synthetic import generate_corpus
from lmforge.tokenizer import (
    PackConfig,
    SegmentBatches,
    TokenizerTrainConfig,
    TokenStream,
    run_pack,
    run_train,
)


def test_train_then_pack_writes_artifacts(tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, seed=2, size_mb=0.2)
    tok_dir = run_train(TokenizerTrainConfig(data=[corpus], vocab_size=600, out=tmp_path / "tok"))
    manifest = read_manifest(tok_dir)
    assert manifest["stage"] == "tokenizer.train" and manifest["config"]["vocab_size"] == 600
    assert manifest["parents"][0]["path"] == str(corpus.resolve()) and "tokenizer.json" in manifest["files"]
    assert load_tokenizer(tok_dir).get_vocab_size() == 600

    tokens = run_pack(PackConfig(data=[corpus], tokenizer=tok_dir, out=tmp_path / "tokens"))
    manifest = read_manifest(tokens)
    assert manifest["stage"] == "tokenizer.pack"
    assert {"index.json", "train_00000.bin", "val_00000.docs.npy"} <= set(manifest["files"])
    assert manifest["tokens"]["train"] == len(TokenStream(tokens, "train")) > manifest["tokens"]["val"] > 0
    x, y = SegmentBatches(TokenStream(tokens, "val"), batch_size=2, seq_len=32).batch(0)
    assert x.shape == y.shape == (2, 32)


def test_configs_are_strict():
    with pytest.raises(ConfigError, match="unknown key 'vocab'"):
        build(TokenizerTrainConfig, {"data": ["x"], "out": "t", "vocab": 10})
    with pytest.raises(ConfigError, match="vocab_size"):
        build(TokenizerTrainConfig, {"data": ["x"], "out": "t", "vocab_size": 100})
    with pytest.raises(ConfigError, match="val_fraction"):
        build(PackConfig, {"data": ["x"], "tokenizer": "t", "out": "o", "val_fraction": 1.5})
    fields = [*TokenizerTrainConfig.model_fields.values(), *PackConfig.model_fields.values()]
    assert all(field.description for field in fields)


def test_tokenizer_and_data_do_not_import_torch():
    code = "import sys, lmforge.data, lmforge.tokenizer; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
