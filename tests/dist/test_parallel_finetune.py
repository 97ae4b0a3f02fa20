"""Fine-tuning and multi-task fine-tuning under data parallelism train exactly like one process.

`lmforge finetune --nproc 2` (DDP replicas, FSDP2 shards, FSDP2 with accumulation) and
`lmforge multitask --nproc 2` (DDP replicas; GradNorm reads the replicas' averaged gradients)
fine-tune a 10-step pretrained tiny model for 8 steps on SST-2 / WNUT-17 slices, and must match
the single-process run of the same settings: the pre-clip gradient norm and the loss of every
step, and the weights (backbone and heads) of the last checkpoint. Dropout is 0 (backbone and
heads): with dropout on, each data-parallel slice draws its own masks by design. Tolerances are
the float32 ones of test_parallel_training.py, for the same reasons.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from processes import run_bounded
from safetensors.torch import load_file

from lmforge.data.tasks import read_conll, read_text_labels
from lmforge.train import pretrain
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.finetune import finetune
from lmforge.train.finetune_config import FinetuneConfig, MultitaskConfig
from lmforge.train.metrics import read_metrics
from lmforge.train.multitask import multitask

pytestmark = pytest.mark.slow

STEPS = 8
TOLERANCE = {"loss": 5e-6, "grad_norm": 3e-5, "weights": 1e-4}
COMMON = {"steps": STEPS, "batch_size": 8, "eval_every": 4, "checkpoint_every": 4, "log_every": 1,
          "max_len": 32, "lr": 3e-3, "dropout": 0.0}


@pytest.fixture(scope="module")
def base(pretrain_config, tmp_path_factory) -> Path:
    cfg = pretrain_config(tmp_path_factory.mktemp("base"), steps=10)
    cfg.model = cfg.model.model_copy(update={"dropout": 0.0, "seq_len": 32})
    return pretrain(cfg, resume=None).model_dir


@pytest.fixture(scope="module")
def files(shared_data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    sst2 = read_text_labels(shared_data / "sst2/dev.tsv", "sentence", "label")
    (root / "sst2.tsv").write_text("text\tlabel\n" + "".join(f"{e.text}\t{e.label}\n" for e in sst2[:160]))
    wnut = read_conll(shared_data / "wnut17/wnut17train.conll")[:120]
    (root / "wnut.conll").write_text("".join(
        "".join(f"{w}\t{t}\n" for w, t in zip(e.tokens, e.tags, strict=True)) + "\n" for e in wnut))
    return {"classify": root / "sst2.tsv", "ner": root / "wnut.conll"}


def trajectory(root: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in read_metrics(root / "metrics.jsonl") if key in r}


def last_weights(root: Path) -> dict:
    return load_file(str(latest_checkpoint(root) / "model.safetensors"))


def assert_matches(root: Path, reference: Path) -> None:
    for key, tolerance in (("grad_norm", {"rel": TOLERANCE["grad_norm"]}),
                           ("loss", {"abs": TOLERANCE["loss"]})):
        got, want = trajectory(root, key), trajectory(reference, key)
        assert sorted(got) == list(range(1, STEPS + 1)), key
        for step in got:
            assert got[step] == pytest.approx(want[step], **tolerance), f"{key} at step {step}"
    got, want = last_weights(root), last_weights(reference)
    assert sorted(got) == sorted(want)
    worst = {n: float((got[n] - want[n]).abs().max()) for n in want}
    assert max(worst.values()) <= TOLERANCE["weights"], worst


def launched(verb: str, *args: str) -> None:
    command = [sys.executable, "-m", "lmforge", verb, *args, "--nproc", "2", "--resume", "none"]
    proc = run_bounded(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def sets(settings: dict) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


@pytest.mark.parametrize(("name", "task", "parallel", "extra"), [
    ("ddp", "classify", {"dp_replicate": 2, "dp_shard": 1}, {"grad_clip": 0.0}),
    ("fsdp", "ner", {"dp_shard": 2}, {"grad_clip": 1.0}),
    ("fsdp-accumulating", "classify", {"dp_shard": 2}, {"micro_batch_size": 2, "grad_clip": 1.0}),
])
def test_finetune_layout_matches_single_process(name, task, parallel, extra, base, files, tmp_path):
    settings = {**COMMON, **extra}
    reference = tmp_path / "models" / "single"
    finetune(FinetuneConfig(model=base, task=task, data={"train": files[task]}, out=reference,
                            **{k: v for k, v in settings.items() if k != "micro_batch_size"}), resume=None)
    out = tmp_path / "models" / name
    launched("finetune", str(base), "--task", task, "--data", str(files[task]), "--out", str(out),
             *sets(settings), *sets({f"parallel.{k}": v for k, v in parallel.items()}))
    assert_matches(tmp_path / "checkpoints" / name, tmp_path / "checkpoints" / "single")
    assert (out / "heads.safetensors").is_file()


def test_multitask_over_replicas_matches_single_process(base, files, tmp_path):
    tasks = [{"task": task, "head": head, "data": {"train": str(files[task])}, "dropout": 0.0}
             for task, head in (("classify", "sentiment"), ("ner", "entities"))]
    settings = {**{k: v for k, v in COMMON.items() if k != "dropout"}, "grad_clip": 1.0, "model": base,
                "tasks": tasks}
    multitask(MultitaskConfig(out=tmp_path / "models" / "single", **settings), resume=None)
    config = tmp_path / "joint.yaml"
    replicas = {"dp_replicate": 2, "dp_shard": 1}
    config.write_text(MultitaskConfig(out=tmp_path / "models" / "ddp", parallel=replicas,
                                      **settings).model_dump_json())
    launched("multitask", str(config))
    assert_matches(tmp_path / "checkpoints" / "ddp", tmp_path / "checkpoints" / "single")
    for task in ("sentiment", "entities"):
        got, want = trajectory(tmp_path / "checkpoints" / "ddp", f"weight/{task}"), \
            trajectory(tmp_path / "checkpoints" / "single", f"weight/{task}")
        assert got == pytest.approx(want, rel=1e-5)
        assert any(abs(w - 1.0) > 1e-4 for w in got.values())
