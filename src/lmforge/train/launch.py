"""`lmforge pretrain --nproc N`: check the layout, then run one worker per rank under torchrun.

The parent process validates the parallel settings against the model and batch before any
worker starts, writes the resolved config next to the checkpoints, and hands it to `torchrun
--standalone` (one node), with gloo bound to the loopback interface (unless GLOO_SOCKET_IFNAME
says otherwise): the workers of a one-machine run have nothing to say to the network. Each worker
joins the gloo process group, builds the device mesh and runs the same `pretrain` loop as a
single process; it exits as soon as the torchrun agent that started it is gone (torchrun starts
each worker in a session of its own, so a `kill -9` of the launcher would otherwise leave the
workers training, and writing checkpoints beside a resumed run). For several nodes, run on
every node:

    torchrun --nnodes 2 --node-rank R --nproc-per-node N --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m lmforge.train.launch CONFIG.yaml
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

import torch.distributed as dist
import yaml
from tokenizers import Tokenizer

from lmforge.config import load, to_dict
from lmforge.model import ModelConfig
from lmforge.model.folder import tokenizer_file
from lmforge.parallel import ParallelSettings, build_layout, check_layout
from lmforge.train.config import PretrainConfig
from lmforge.train.loop import pretrain


def resolve_layout(cfg: PretrainConfig, world: int) -> tuple[ParallelSettings, ModelConfig]:
    """The run's parallel settings checked against `world` ranks, the model and the batch,
    and the model config with the tokenizer's vocabulary size."""
    vocab = Tokenizer.from_file(str(tokenizer_file(cfg.data.tokenizer))).get_vocab_size()
    model = cfg.model.model_copy(update={"vocab_size": vocab})
    return check_layout(cfg.parallel, world, model, cfg.train.batch_size), model


def launch(cfg: PretrainConfig, nproc: int, resume: str) -> int:
    """Start `nproc` workers on this machine; returns torchrun's exit status."""
    settings, _ = resolve_layout(cfg, nproc)
    run_dir = cfg.out / "checkpoints" / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = run_dir / "launch.yaml"
    resolved.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    print(f"launching {nproc} workers: {settings.describe()}", flush=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "lmforge.train.launch", str(resolved), "--resume", resume]
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
    parser = argparse.ArgumentParser(description="lmforge pretraining worker (started by torchrun)")
    parser.add_argument("config", type=Path)
    parser.add_argument("--resume", default="auto", help="auto, none, or a checkpoint folder")
    args = parser.parse_args(argv)
    exit_with_parent()
    dist.init_process_group("gloo")
    try:
        cfg = load(PretrainConfig, args.config, [])
        layout = build_layout(resolve_layout(cfg, dist.get_world_size())[0])
        result = pretrain(cfg, resume=None if args.resume == "none" else args.resume, layout=layout)
        if layout.rank == 0:
            print(f"validation perplexity: {result.ppl_after:,.2f} after {result.steps} steps", flush=True)
            print(f"model folder: {result.model_dir}", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
