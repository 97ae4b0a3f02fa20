"""`lmforge pretrain|finetune|multitask --nproc N`: check the layout, then one worker per rank.

The parent process validates the parallel settings against the model and batch before any
worker starts, writes the resolved config next to the checkpoints, and hands it to `torchrun
--standalone` (one node), with gloo bound to the loopback interface (unless GLOO_SOCKET_IFNAME
says otherwise): the workers of a one-machine run have nothing to say to the network. Each worker
joins the process group (NCCL on GPUs, gloo on CPUs), builds the device mesh and runs the same
training function as a single process; it exits as soon as the torchrun agent that started it
is gone (torchrun starts each worker in a session of its own, so a `kill -9` of the launcher
would otherwise leave the workers training, and writing checkpoints beside a resumed run).
For several nodes, run on every node:

    torchrun --nnodes 2 --node-rank R --nproc-per-node N --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m lmforge.train.launch pretrain CONFIG.yaml
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from lmforge.artifacts import load_tokenizer
from lmforge.config import Config, ConfigError, load, to_dict
from lmforge.device import collective_backend, resolve_device
from lmforge.model import ModelConfig
from lmforge.model.folder import read_model_config
from lmforge.parallel import Layout, ParallelSettings, build_layout, check_layout
from lmforge.train.config import PretrainConfig
from lmforge.train.finetune import checkpoint_root, finetune
from lmforge.train.finetune_config import FinetuneConfig, MultitaskConfig
from lmforge.train.multitask import multitask
from lmforge.train.pretrain import pretrain

STAGES = ("pretrain", "finetune", "multitask")
"""The training runs a multi-process launch can start; each is a configuration of the one trainer."""


def stage_config(stage: str) -> type[Config]:
    return {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "multitask": MultitaskConfig}[stage]


def resolve_layout(cfg: Config, world: int) -> tuple[ParallelSettings, ModelConfig]:
    """The run's parallel settings checked against `world` ranks, the model and the batch, and the
    model config (pretraining: with the tokenizer's vocabulary size; fine-tuning: the source's)."""
    if isinstance(cfg, PretrainConfig):
        vocab = load_tokenizer(cfg.data.tokenizer).get_vocab_size()
        model = cfg.model.model_copy(update={"vocab_size": vocab})
        return check_layout(cfg.parallel, world, model, cfg.train.batch_size), model
    settings = cfg.parallel
    if settings.tp > 1 or settings.pp > 1:
        raise ConfigError("parallel: fine-tuning splits the batch only (dp_replicate / dp_shard); "
                          "set tp=1 and pp=1")
    model = read_model_config(cfg.model)
    checked = check_layout(settings, world, model, cfg.batch_size)
    if isinstance(cfg, MultitaskConfig) and checked.dp_shard > 1:
        raise ConfigError("parallel: multi-task runs use replicas only (parallel.dp_replicate=N, "
                          "parallel.dp_shard=1): GradNorm reads each task's whole shared-layer gradient")
    return checked, model


def run_dir(cfg: Config) -> Path:
    """The folder a launch writes its resolved config to: the run's checkpoint folder."""
    if isinstance(cfg, PretrainConfig):
        return cfg.out / "checkpoints" / cfg.name
    return checkpoint_root(cfg.output if isinstance(cfg, FinetuneConfig) else cfg.out)


def launch(stage: str, cfg: Config, nproc: int, resume: str) -> int:
    """Start `nproc` workers of `stage` on this machine; returns torchrun's exit status."""
    settings, _ = resolve_layout(cfg, nproc)
    folder = run_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    resolved = folder / "launch.yaml"
    resolved.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    print(f"launching {nproc} workers: {settings.describe()}", flush=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "lmforge.train.launch", stage, str(resolved), "--resume", resume]
    env = dict(os.environ)
    loopback = loopback_interface()
    if loopback and "GLOO_SOCKET_IFNAME" not in env:
        env["GLOO_SOCKET_IFNAME"] = loopback
    return subprocess.run(command, check=False, env=env).returncode


def loopback_interface() -> str | None:
    """The loopback interface's name ("lo" on Linux, "lo0" on macOS), or None if there is none."""
    try:
        names = {name for _, name in socket.if_nameindex()}
    except OSError:
        return None
    return next((name for name in ("lo", "lo0") if name in names), None)


def exit_with_parent(interval: float = 0.5) -> None:
    """Kill this process as soon as its parent (the torchrun agent) is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGKILL)  # not exit(): a collective may be waiting on a dead peer

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """Worker: join the process group, build this rank's layout, train."""
    parser = argparse.ArgumentParser(description="lmforge training worker (started by torchrun)")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("config", type=Path)
    parser.add_argument("--resume", default="auto", help="auto, none, or a checkpoint folder")
    args = parser.parse_args(argv)
    exit_with_parent()
    cfg = load(stage_config(args.stage), args.config, [])
    optim = cfg.train if isinstance(cfg, PretrainConfig) else cfg
    device = resolve_device(optim.device, local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(collective_backend(device))
    try:
        layout = build_layout(resolve_layout(cfg, dist.get_world_size())[0], device)
        resume = None if args.resume == "none" else args.resume
        report = RUNNERS[args.stage](cfg, resume, layout)
        if layout.rank == 0:
            print("\n".join(report), flush=True)
    finally:
        dist.destroy_process_group()


def _pretrain(cfg: PretrainConfig, resume: str | None, layout: Layout) -> list[str]:
    result = pretrain(cfg, resume=resume, layout=layout)
    return [f"validation perplexity: {result.ppl_after:,.2f} after {result.steps} steps",
            f"model folder: {result.model_dir}"]


def _finetune(cfg: FinetuneConfig, resume: str | None, layout: Layout) -> list[str]:
    result = finetune(cfg, resume=resume, layout=layout)
    return [f"dev {k}: {v:.4f}" for k, v in result.dev.items()] + [f"model folder: {result.model_dir}"]


def _multitask(cfg: MultitaskConfig, resume: str | None, layout: Layout) -> list[str]:
    result = multitask(cfg, resume=resume, layout=layout)
    return [f"dev {head} {k}: {v:.4f}" for head, m in result.dev.items() for k, v in m.items()] + \
        [f"model folder: {result.model_dir}"]


RUNNERS = {"pretrain": _pretrain, "finetune": _finetune, "multitask": _multitask}


if __name__ == "__main__":
    main()
