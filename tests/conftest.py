"""Shared fixtures: a tiny packed corpus built once per session, the shared real datasets, and the
command line in-process."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from lmforge.cli import app

REPO = Path(__file__).resolve().parents[1]

if "PYTEST_XDIST_WORKER" in os.environ:
    # `make test` runs two workers on the machine's two cores. With OpenMP's default of a thread
    # per core each, four busy-waiting threads share two cores and training steps slow down many
    # times over; one thread per worker (and per process a test starts) keeps each core to one.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run wherever torch sees a CUDA device and are skipped elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real datasets live outside the repo; LMFORGE_DATA points elsewhere if needed."""
    path = Path(os.environ.get("LMFORGE_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        message = f"shared datasets not found at {path} (set LMFORGE_DATA)"
        if os.environ.get("CI"):  # CI always has them: a missing path there is a broken setup
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> dict[str, Path]:
    """A 0.4 MB built-in corpus, a 1k-vocab tokenizer and its packed tokens."""
    from lmforge.data.synthetic import generate_corpus
    from lmforge.tokenizer import PackConfig, TokenizerTrainConfig, run_pack, run_train

    root = tmp_path_factory.mktemp("corpus")
    dataset = root / "dataset"
    generate_corpus(dataset, seed=1, size_mb=0.4)
    tokenizer = run_train(TokenizerTrainConfig(data=[dataset], vocab_size=1000, out=root / "tokenizer"))
    tokens = run_pack(PackConfig(data=[dataset], tokenizer=tokenizer, out=root / "tokens", val_fraction=0.1))
    return {"dataset": dataset, "tokenizer": tokenizer, "tokens": tokens}


@pytest.fixture(scope="session")
def pretrain_config(tiny_corpus):
    """Factory of PretrainConfigs for a 2-layer model that steps in milliseconds."""
    return functools.partial(_tiny_pretrain_config, tiny_corpus)


def _tiny_pretrain_config(corpus: dict[str, Path], out: Path, **train):
    from lmforge.train import PretrainConfig

    settings = {"steps": 20, "batch_size": 4, "lr": 3e-3, "eval_every": 10, "eval_segments": 2,
                "checkpoint_every": 10, "log_every": 1, "peak_gflops": 100.0, **train}
    return PretrainConfig(
        name="t", out=out,
        model={"preset": "tiny", "d_model": 32, "n_heads": 2, "d_ff": 64, "seq_len": 16, "mem_len": 16},
        data={"tokens": corpus["tokens"], "tokenizer": corpus["tokenizer"]},
        train=settings,
    )


@pytest.fixture(scope="session")
def lm_folder(pretrain_config, tmp_path_factory) -> Path:
    """A pretrained causal-LM model folder (xl positions, memory on, dropout on as shipped)."""
    from lmforge.train import pretrain

    cfg = pretrain_config(tmp_path_factory.mktemp("lm"), steps=30)
    cfg.model = cfg.model.model_copy(update={"seq_len": 32, "mem_len": 32})
    return pretrain(cfg, resume=None).model_dir


@pytest.fixture(scope="session")
def classifier_folder(lm_folder, shared_data, tmp_path_factory) -> dict[str, Path]:
    """`lm_folder` fine-tuned on 600 SST-2 rows: {"model": folder, "train": rows, "test": SST-2 test}."""
    from lmforge.train.finetune import finetune
    from lmforge.train.finetune_config import FinetuneConfig

    tmp = tmp_path_factory.mktemp("classifier")
    with (shared_data / "sst2/dev.tsv").open(encoding="utf-8") as f:
        (tmp / "train.tsv").write_text("".join(line for _, line in zip(range(601), f, strict=False)))
    cfg = FinetuneConfig(model=lm_folder, task="classify", out=tmp / "model", steps=60, eval_every=30,
                         max_len=32, data={"train": tmp / "train.tsv", "text_column": "sentence"})
    test = shared_data / "sst2/test.tsv"
    return {"model": finetune(cfg).model_dir, "train": tmp / "train.tsv", "test": test}


@pytest.fixture(scope="session")
def cli() -> Callable[..., Result]:
    """`lmforge ARGS...` in-process."""
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def export(cli) -> Callable[..., Path]:
    """`lmforge export ARGS...`, which must succeed; returns the export folder it prints last."""

    def run(*args) -> Path:
        result = cli("export", *args)
        assert result.exit_code == 0, result.output
        return Path(result.stdout.strip().splitlines()[-1].removeprefix("export folder: "))

    return run
