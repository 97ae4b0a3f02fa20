"""Fine-tuning and evaluation, from a 20-step pretrained model (the conftest tiny model, d_model 32,
1k-vocab tokenizer of the built-in corpus, seq_len 64 so whole sentences fit).

- Overfitting: a small subset of the built-in corpus's ner.conll and classification.tsv, trained
  and scored on the same examples, must reach a high bar (entity F1 >= 0.9, accuracy >= 0.95):
  anything that breaks the tag alignment, the head's reading of the tokens, the labels or the
  optimisation cannot. The reported scores are recomputed in this file from the saved folder,
  one unpadded example at a time, with hand-written span and accuracy code.
- Real data (slices of SST-2, WNUT-17, BANKING77): the tokenizer knows little English, so the
  bars are low (beat the majority baseline), but the pipelines and metrics must hold up.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from typer.testing import CliRunner

from lmforge.cli import app
from lmforge.data.tasks import read_conll, read_text_labels
from lmforge.model.folder import load_heads, load_model, read_heads
from lmforge.model.heads import MultiTaskModel
from lmforge.model.inputs import encode_words, word_tags
from lmforge.train import pretrain
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.finetune import evaluate, finetune
from lmforge.train.finetune_config import FinetuneConfig
from lmforge.train.finetune_data import align_tags, hold_out
from lmforge.train.metrics import read_metrics
from lmforge.train.trainer import PlugPoints


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
    assert recorded["classify"][str((shared_data / "sst2/test.tsv").resolve())] == metrics


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
    assert set(result.dev) == {"precision", "recall", "f1"}
    assert result.dev == pytest.approx(independent_ner_scores(result.model_dir, read_conll(cfg.data.dev)))
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
    examples = read_text_labels(cfg.data.train, "text", "category")
    _, dev = hold_out(examples, cfg.data.dev_fraction, cfg.seed)
    assert result.dev["recall@1"] == pytest.approx(independent_recall_at_1(result.model_dir, dev))


def test_cli_reports_malformed_rows_with_line_numbers(base_model, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\ngood movie\t1\nno label here\nbad\tmovie\t0\nfine\t0\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["finetune", str(base_model), "--task", "classify", "--data", str(bad),
                                      "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "bad.tsv" in lines[0] and "lines 3, 4" in lines[0]


# ---- independent scoring: one unpadded example at a time, hand-written metrics -----------------------

def saved(folder: Path) -> tuple[MultiTaskModel, Tokenizer, dict]:
    model = MultiTaskModel(load_model(folder), load_heads(folder)).eval()
    return model, Tokenizer.from_file(str(folder / "tokenizer.json")), read_heads(folder)


def spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """conlleval entities: B-x starts one; I-x continues an x entity, else starts one."""
    found, current = set(), None  # current = [type, start]
    for i, tag in enumerate(tags):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        if current and (kind != current[0] or tag.startswith("B-")):
            found.add((current[0], current[1], i))
            current = None
        if kind and current is None:
            current = [kind, i]
    if current:
        found.add((current[0], current[1], len(tags)))
    return found


def independent_ner_scores(folder: Path, examples, max_len: int = 64) -> dict[str, float]:
    """Entity precision/recall/F1 of the saved NER head: the tag of a word is read at its first piece."""
    model, tokenizer, heads = saved(folder)
    labels = heads["ner"]["labels"]
    correct = n_true = n_pred = 0
    with torch.no_grad():
        for n, example in enumerate(examples):
            encoding = tokenizer.encode([w if i == 0 else " " + w for i, w in enumerate(example.tokens)],
                                        is_pretokenized=True)
            ids, word_of = encoding.ids[:max_len], encoding.word_ids[:max_len]
            _, logits = model("ner", torch.tensor([ids]))
            predicted = ["O"] * len(example.tokens)
            for position in range(len(ids)):
                word = word_of[position]
                if word is not None and (position == 0 or word_of[position - 1] != word):
                    predicted[word] = labels[int(logits[0, position].argmax())]
            true = {(n, *span) for span in spans(example.tags)}
            pred = {(n, *span) for span in spans(predicted)}
            correct, n_true, n_pred = correct + len(true & pred), n_true + len(true), n_pred + len(pred)
    precision, recall = correct / n_pred if n_pred else 0.0, correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def independent_accuracy(folder: Path, examples, max_len: int = 64) -> float:
    model, tokenizer, heads = saved(folder)
    labels = heads["classify"]["labels"]
    hits = 0
    with torch.no_grad():
        for ex in examples:
            ids = tokenizer.encode(ex.text).ids[:max_len]
            _, logits = model("classify", torch.tensor([ids]))
            hits += labels[int(logits.argmax())] == ex.label
    return hits / len(examples)


def independent_recall_at_1(folder: Path, examples, max_len: int = 64) -> float:
    """Share of items (whose label occurs twice or more) whose most cosine-similar other item shares it."""
    model, tokenizer, _ = saved(folder)
    with torch.no_grad():
        vectors = [model("embed", torch.tensor([tokenizer.encode(ex.text).ids[:max_len] or [0]]))
                   [1][0].double().numpy() for ex in examples]
    labels = [ex.label for ex in examples]
    hits = queries = 0
    for i, vector in enumerate(vectors):
        if labels.count(labels[i]) < 2:
            continue
        cosines = [float(np.dot(vector, other) / np.linalg.norm(vector) / np.linalg.norm(other)) if j != i
                   else -np.inf for j, other in enumerate(vectors)]
        hits += labels[int(np.argmax(cosines))] == labels[i]
        queries += 1
    return hits / queries


def test_independent_scoring_by_hand():
    assert spans(["B-a", "I-a", "O", "I-b", "B-b", "I-a"]) == {("a", 0, 2), ("b", 3, 4), ("b", 4, 5),
                                                                 ("a", 5, 6)}
    assert spans(["I-a", "I-a", "B-a"]) == {("a", 0, 2), ("a", 2, 3)}


# ---- overfitting small built-in data to a high bar ------------------------------------------------------

@pytest.fixture(scope="module")
def builtin_ner(base_model, tiny_corpus, tmp_path_factory) -> tuple[Path, list]:
    """The first 96 sentences of the built-in ner.conll that fit in 64 tokens, as a CoNLL file in tmp."""
    tokenizer = Tokenizer.from_file(str(base_model / "tokenizer.json"))
    sentences = [ex for ex in read_conll(tiny_corpus["dataset"] / "ner.conll")
                 if len(encode_words(tokenizer, ex.tokens, 10**6)[0]) <= 64][:96]
    path = tmp_path_factory.mktemp("builtin-ner") / "ner.conll"
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(ex.tokens, ex.tags, strict=True)) + "\n"
                            for ex in sentences), encoding="utf-8")
    return path, sentences


def test_ner_overfits_a_small_builtin_set(base_model, builtin_ner, tmp_path):
    path, sentences = builtin_ner
    assert sum(tag.startswith("B-") for ex in sentences for tag in ex.tags) >= 100
    cfg = FinetuneConfig(model=base_model, task="ner", out=tmp_path / "ner", steps=150, eval_every=50,
                         lr=3e-3, patience=10, max_len=64, data={"train": path, "dev": path})
    result = finetune(cfg)
    print(f"built-in NER, trained and scored on the same {len(sentences)} sentences: {result.dev}")
    assert result.dev["f1"] >= 0.9
    assert result.dev == pytest.approx(independent_ner_scores(result.model_dir, sentences))


def test_classify_overfits_a_small_builtin_set(base_model, tiny_corpus, tmp_path):
    rows = (tiny_corpus["dataset"] / "classification.tsv").read_text(encoding="utf-8").splitlines()[:97]
    path = tmp_path / "classification.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    examples = read_text_labels(path, "text", "label")
    assert len({ex.label for ex in examples}) == 4
    cfg = FinetuneConfig(model=base_model, task="classify", out=tmp_path / "classify", steps=60,
                         eval_every=20, lr=3e-3, patience=10, max_len=64, data={"train": path, "dev": path})
    result = finetune(cfg)
    print(f"built-in classification, trained and scored on the same {len(examples)} texts: {result.dev}")
    assert result.dev["accuracy"] >= 0.95
    assert result.dev["accuracy"] == pytest.approx(independent_accuracy(result.model_dir, examples))


class CrashAt:
    """Step callback standing in for a killed process: raises once, at step `step`."""

    name = "crash"

    def __init__(self, step: int):
        self.step = step

    def after_step(self, step, record, engine):
        if step == self.step:
            raise KeyboardInterrupt
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize(("task", "micro", "precision"), [("ner", None, "fp32"), ("classify", 4, "bf16")])
def test_interrupted_finetune_resumes_to_the_same_model(task, micro, precision, base_model, shared_data,
                                                        tmp_path):
    """Dropout on (backbone and head), early stopping on: a run cut after step 7 and resumed from its
    step-6 checkpoint takes the same steps (losses, last weights) and writes the same model folder
    (best weights, best step, metrics)."""
    data = tmp_path / "data"
    data.mkdir()
    if task == "ner":
        sentences = read_conll(shared_data / "wnut17/wnut17train.conll")[:200]
        (data / "train.conll").write_text("".join(
            "".join(f"{w}\t{t}\n" for w, t in zip(s.tokens, s.tags, strict=True)) + "\n" for s in sentences))
        files = {"train": data / "train.conll"}
    else:
        files = {"train": head_of(shared_data / "sst2/dev.tsv", data / "train.tsv", 300),
                 "text_column": "sentence"}

    def config(name: str) -> FinetuneConfig:
        return FinetuneConfig(model=base_model, task=task, out=tmp_path / "models" / name, steps=14,
                              eval_every=3, checkpoint_every=3, log_every=1, patience=10, batch_size=8,
                              micro_batch_size=micro, precision=precision, max_len=32, data=files)

    whole = finetune(config("whole"), resume=None)
    with pytest.raises(KeyboardInterrupt):
        finetune(config("cut"), resume=None, plugs=PlugPoints(callbacks=[CrashAt(7)]))
    resumed = finetune(config("cut"), resume="auto")
    assert (resumed.dev, resumed.best_step, resumed.steps) == (whole.dev, whole.best_step, whole.steps)
    for file in ("model.safetensors", "heads.safetensors"):
        a, b = load_file(str(whole.model_dir / file)), load_file(str(resumed.model_dir / file))
        assert all(torch.equal(a[k], b[k]) for k in a), file
    runs = [tmp_path / "checkpoints" / name for name in ("whole", "cut")]
    losses = [{r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}
              for run in runs]
    assert losses[0] == losses[1] and sorted(losses[0]) == list(range(1, 15))
    last = [load_file(str(latest_checkpoint(run) / "model.safetensors")) for run in runs]
    assert all(torch.equal(last[0][k], last[1][k]) for k in last[0])
