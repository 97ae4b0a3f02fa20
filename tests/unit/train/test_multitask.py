"""Multi-task fine-tuning on slices of BANKING77 (classify) and WNUT-17 (ner) from a 20-step pretrained model.

GradNorm must keep its weights positive and summing to the number of tasks while moving them
away from 1.0; equal weighting must leave them at 1.0. Both task losses must fall, and the output
folder must hold both heads.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest
import yaml
from processes import run_bounded
from tokenizers import Tokenizer

from lmforge.data.tasks import read_conll, read_text_labels
from lmforge.model.folder import load_heads, load_model, read_heads
from lmforge.model.heads import MultiTaskModel
from lmforge.train import pretrain
from lmforge.train.finetune import Split, evaluate, score
from lmforge.train.finetune_config import MultitaskConfig, TaskSettings
from lmforge.train.finetune_data import encode_examples
from lmforge.train.multitask import multitask


@pytest.fixture(scope="module")
def base_model(pretrain_config, tmp_path_factory) -> Path:
    cfg = pretrain_config(tmp_path_factory.mktemp("pretrained"), steps=20)
    cfg.model = cfg.model.model_copy(update={"seq_len": 64})
    return pretrain(cfg, resume=None).model_dir


@pytest.fixture(scope="module")
def tasks(shared_data, tmp_path_factory) -> list[TaskSettings]:
    """BANKING77 and WNUT-17 slices written to files, as a user's task files."""
    root = tmp_path_factory.mktemp("tasks")
    banking = read_text_labels(shared_data / "banking77/train.csv", "text", "category")
    random.Random(0).shuffle(banking)  # the file is sorted by intent
    wnut = read_conll(shared_data / "wnut17/wnut17train.conll")
    for name, rows in (("intent_train", banking[:1500]), ("intent_dev", banking[1500:1700])):
        lines = "".join(f"{ex.text}\t{ex.label}\n" for ex in rows)
        (root / f"{name}.tsv").write_text("text\tlabel\n" + lines)
    for name, sentences in (("entities_train", wnut[:600]), ("entities_dev", wnut[600:700])):
        (root / f"{name}.conll").write_text("".join(
            "".join(f"{word}\t{tag}\n" for word, tag in zip(ex.tokens, ex.tags, strict=True)) + "\n"
            for ex in sentences))
    return [TaskSettings(task="classify", head="intent",
                         data={"train": root / "intent_train.tsv", "dev": root / "intent_dev.tsv"}),
            TaskSettings(task="ner", head="entities",
                         data={"train": root / "entities_train.conll", "dev": root / "entities_dev.conll"})]


def rescored(folder: Path, task: TaskSettings, labels: list[str]) -> dict[str, float]:
    """The classify head's dev metrics from the saved folder alone."""
    model = MultiTaskModel(load_model(folder), load_heads(folder))
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    examples = read_text_labels(task.data.dev)
    split = Split(examples, encode_examples(tokenizer, examples, "classify", labels, 48))
    return score(model, "intent", "classify", split, labels, tokenizer, 48, 1)


def run(base_model: Path, tasks: list[TaskSettings], balancer: str, steps: int, out: Path):
    cfg = MultitaskConfig(model=base_model, tasks=tasks, balancer=balancer, steps=steps, batch_size=16,
                          lr=3e-3, log_every=steps // 4, eval_every=steps, max_len=48, out=out)
    return multitask(cfg, resume=None)


def test_gradnorm_weights_move_stay_positive_and_sum_to_n_tasks(base_model, tasks, tmp_path):
    result = run(base_model, tasks, "gradnorm", 40, tmp_path / "model")
    for record in result.log:
        weights = list(record["weights"].values())
        assert all(w > 0 for w in weights) and sum(weights) == pytest.approx(2.0, abs=1e-4)
    assert any(abs(w - 1.0) > 1e-3 for w in result.weights.values())
    first, last = result.log[0]["losses"], result.log[-1]["losses"]
    print(f"losses {first} -> {last}; weights {result.weights}; dev {result.dev}")
    assert all(last[name] < first[name] for name in ("intent", "entities"))
    assert set(result.dev["intent"]) == {"accuracy", "macro_f1"} and "f1" in result.dev["entities"]

    folder = result.model_dir
    spec = json.loads((folder / "heads.json").read_text())["heads"]
    assert spec["intent"]["task"] == "classify" and spec["entities"]["task"] == "ner"
    assert "B-person" in spec["entities"]["labels"]
    assert set(load_heads(folder)) == {"intent", "entities"}
    assert rescored(folder, tasks[0], spec["intent"]["labels"]) == result.dev["intent"]
    logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert logged == result.log
    assert json.loads((folder / "metrics.json").read_text())["dev"] == result.dev


def test_evaluate_scores_each_head_of_a_multitask_folder_the_way_it_was_trained(base_model, tasks, tmp_path):
    """Heads trained at max_len 48 on a 64-token model: evaluate must truncate at 48, per head."""
    result = run(base_model, tasks, "equal", 8, tmp_path / "joint")
    for task, head in (("classify", "intent"), ("ner", "entities")):
        dev = next(t for t in tasks if t.head == head).data.dev
        assert evaluate(result.model_dir, task, dev, head=head) == pytest.approx(result.dev[head])
    spec = json.loads((result.model_dir / "heads.json").read_text())["heads"]
    assert spec["intent"]["usage"]["max_len"] == 48 and spec["entities"]["usage"]["causal"] is False


def test_equal_weights_stay_at_one(base_model, tasks, tmp_path):
    result = run(base_model, tasks, "equal", 8, tmp_path / "equal")
    assert len(result.log) == 4
    assert all(record["weights"] == {"intent": 1.0, "entities": 1.0} for record in result.log)


def test_duplicate_head_names_are_rejected(base_model, tasks, tmp_path):
    with pytest.raises(ValueError, match="distinct"):
        MultitaskConfig(model=base_model, tasks=[tasks[0], tasks[0]], out=tmp_path / "x")


def test_multitask_command_trains_every_head_from_a_yaml_config(base_model, shared_data, tmp_path):
    config = tmp_path / "multitask.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(base_model), "out": str(tmp_path / "joint"), "steps": 4, "batch_size": 8,
        "max_len": 32,
        "tasks": [
            {"task": "classify", "head": "sentiment",
             "data": {"train": str(shared_data / "sst2/dev.tsv"), "text_column": "sentence"}},
            {"task": "ner", "head": "entities",
             "data": {"train": str(shared_data / "wnut17/emerging.dev.conll")}},
        ],
    }))
    proc = run_bounded([sys.executable, "-m", "lmforge", "multitask", str(config)], capture_output=True,
                       text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dev sentiment accuracy:" in proc.stdout and "dev entities f1:" in proc.stdout
    assert {"sentiment", "entities"} <= set(read_heads(tmp_path / "joint"))
    config.write_text(config.read_text().replace("steps: 4", "steps: 4\nbalancr: equal"))
    proc = run_bounded([sys.executable, "-m", "lmforge", "multitask", str(config)], capture_output=True,
                       text=True, timeout=300)
    assert proc.returncode == 1 and "balancr" in proc.stderr
