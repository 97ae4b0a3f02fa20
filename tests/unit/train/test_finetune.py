"""Fine-tuning and evaluation on small slices of the real datasets, from a 20-step pretrained model.

The backbone is the conftest tiny model (d_model 32, 1k-vocab tokenizer of the built-in corpus)
with seq_len 64 so whole sentences fit; its tokenizer knows little English, so the numbers are
low, but a clear margin over the majority baseline shows the head and backbone learned.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from typer.testing import CliRunner

from lmforge.cli import app
from lmforge.model.folder import load_heads
from lmforge.train import pretrain
from lmforge.train.finetune import evaluate, finetune
from lmforge.train.finetune_config import FinetuneConfig
from lmforge.train.finetune_data import align_tags, encode_words, word_tags


@pytest.fixture(scope="module")
def base_model(pretrain_config, tmp_path_factory) -> Path:
    cfg = pretrain_config(tmp_path_factory.mktemp("pretrained"), steps=20)
    cfg.model = cfg.model.model_copy(update={"seq_len": 64})
    return pretrain(cfg, resume=None).model_dir


def head_of(src: Path, dst: Path, n_lines: int) -> Path:
    """The first `n_lines` lines of a shared data file, in tmp (never in the repo)."""
    with src.open(encoding="utf-8") as f:
        dst.write_text("".join(line for _, line in zip(range(n_lines), f, strict=False)), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def sst2_run(base_model, shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sst2")
    train = head_of(shared_data / "sst2/dev.tsv", tmp / "train.tsv", 1501)
    cfg = FinetuneConfig(model=base_model, task="classify", out=tmp / "model", steps=150, eval_every=50,
                         max_len=48, data={"train": train, "test": shared_data / "sst2/test.tsv",
                                           "text_column": "sentence"})
    return finetune(cfg)


def test_classify_beats_majority_baseline(sst2_run):
    metrics = json.loads((sst2_run.model_dir / "metrics.json").read_text())
    baseline = metrics["majority_baseline"]["test"]
    print(f"SST-2 test accuracy {sst2_run.test['accuracy']:.3f} vs majority {baseline:.3f}")
    assert sst2_run.test["accuracy"] >= baseline + 0.05
    assert metrics["dev"] == sst2_run.dev and metrics["steps"] == sst2_run.steps


def test_heads_round_trip_and_evaluate_reproduces_test_metric(sst2_run, base_model, shared_data):
    folder = sst2_run.model_dir
    heads = load_heads(folder)
    spec = json.loads((folder / "heads.json").read_text())["heads"]
    assert spec["lm"] == {"task": "causal_lm"} and spec["classify"]["labels"] == ["0", "1"]
    again = load_heads(folder)
    for key, value in heads.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "heads.safetensors" in manifest["files"] and len(manifest["parents"]) == 3
    metrics = evaluate(folder, "classify", shared_data / "sst2/test.tsv")
    assert metrics["accuracy"] == pytest.approx(sst2_run.test["accuracy"])
    recorded = json.loads((folder / "metrics.json").read_text())["evaluations"]
    assert recorded[str((shared_data / "sst2/test.tsv").resolve())] == metrics


def test_ner_alignment_survives_encode_decode(base_model):
    tokenizer = Tokenizer.from_file(str(base_model / "tokenizer.json"))
    words = ["@paulwalk", "visited", "New", "York", "yesterday"]
    tags = ["B-person", "O", "B-location", "I-location", "O"]
    label_set = ["O", "B-location", "I-location", "B-person", "I-person"]
    ids, word_ids = encode_words(tokenizer, words, max_len=64)
    assert len(ids) > len(words)  # sub-words exist, so alignment matters
    labels = align_tags(word_ids, [label_set.index(t) for t in tags])
    assert sum(label != -100 for label in labels) == len(words)
    predicted = [0 if label == -100 else label for label in labels]
    assert word_tags(word_ids, predicted, label_set, len(words)) == tags


def test_ner_runs_end_to_end(base_model, shared_data, tmp_path):
    wnut = shared_data / "wnut17"
    cfg = FinetuneConfig(model=base_model, task="ner", out=tmp_path / "ner", steps=30, eval_every=15,
                         data={"train": head_of(wnut / "wnut17train.conll", tmp_path / "train.conll", 3000),
                               "dev": head_of(wnut / "emerging.dev.conll", tmp_path / "dev.conll", 1500)})
    result = finetune(cfg)
    print(f"WNUT-17 dev entity F1 {result.dev['f1']:.3f}")
    assert 0.0 <= result.dev["f1"] <= 1.0 and set(result.dev) == {"precision", "recall", "f1"}
    assert "B-person" in json.loads((result.model_dir / "heads.json").read_text())["heads"]["ner"]["labels"]


def test_embed_simcse_lowers_loss_and_reports_recall(base_model, shared_data, tmp_path):
    cfg = FinetuneConfig(model=base_model, task="embed", out=tmp_path / "embed", steps=40, eval_every=20,
                         patience=5, data={"train": head_of(shared_data / "banking77/train.csv",
                                                            tmp_path / "train.csv", 1200),
                                           "text_column": "text", "label_column": "category"})
    result = finetune(cfg)
    losses = [record["loss"] for record in result.history]
    print(f"BANKING77 dev recall@1 {result.dev['recall@1']:.3f}; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert 0.0 <= result.dev["recall@1"] <= 1.0


def test_cli_reports_malformed_rows_with_line_numbers(base_model, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\ngood movie\t1\nno label here\nbad\tmovie\t0\nfine\t0\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["finetune", str(base_model), "--task", "classify", "--data", str(bad),
                                      "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "bad.tsv" in lines[0] and "lines 3, 4" in lines[0]
