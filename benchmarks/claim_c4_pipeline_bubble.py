"""Guide claim C4: GPipe with 4 stages keeps the pipeline bubble under 15%; measured bubble and memory.

    python benchmarks/claim_c4_pipeline_bubble.py [--stages 2,4] [--microbatches 4,8,16,24,32]
        [--schedules gpipe,1f1b] [--steps 10] [--warmup 2] [--micro-batch 2]

For each number of stages p (one torchrun launch of p gloo processes, OMP_NUM_THREADS=1), each
schedule and each micro-batch count m, a Transformer-XL model (`tiny` widths, 8 layers, dropout 0,
causal, recurrence memory carried between steps as in training) trains through lmforge's Engine
on random tokens; the micro-batch size is fixed, so the global batch grows with m. Per stage, the
PipelineStage's `forward_one_chunk` / `backward_one_chunk` and the schedule's loss computation are
timed; the step lasts from the first stage's start of `schedule.step` to the last stage's end
(after a barrier; perf_counter is one monotonic clock for all processes on the machine), and a
stage's idle (bubble) fraction is 1 - busy / step. Median over measured steps, beside the theory
(p-1)/(m+p-1). One extra step runs under `saved_tensors_hooks` that count the distinct storage
bytes autograd keeps for backward (parameters excluded): peak per stage, also in micro-batches.
Foreign CPU load is read from /proc/stat as in train_throughput.py.
Writes benchmarks/results/claim_c4_pipeline_bubble.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from train_throughput import foreign_load, machine_jiffies

from lmforge.device import resolve_device
from lmforge.model import ModelConfig, Transformer
from lmforge.parallel import ParallelSettings, build_layout, check_layout
from lmforge.parallel.mesh import Layout
from lmforge.train.engine import Engine
from lmforge.train.objectives import LanguageModelling, Objective

RESULTS = Path(__file__).parent / "results"
CAUSAL = LanguageModelling(Objective("causal"), stream=None)
"""The causal LM objective; the batches are made here, so it has no stream of its own."""
PREFIX = "C4RESULT "
CLAIM, CLAIM_STAGES = 0.15, 4
MIB = 2**20


def theory(p: int, m: int) -> float:
    """GPipe/1F1B bubble with equal stages and free communication: (p-1) idle slots out of m+p-1."""
    return (p - 1) / (m + p - 1)


def smallest_m_in_theory(p: int, bound: float) -> int:
    m = 1
    while theory(p, m) >= bound:
        m += 1
    return m


# ----------------------------------------------------------------------------------------------- worker


class SavedBytes:
    """Distinct storage bytes autograd holds for backward, live and peak, via saved_tensors_hooks."""

    def __init__(self, excluded: set[int]) -> None:
        self.excluded = excluded  # parameter storages: weights, not activations
        self.refs: dict[int, list[int]] = {}  # storage pointer -> [saved tensors on it, bytes]
        self.live = self.peak = 0

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def _pack(self, t: torch.Tensor) -> Any:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self.excluded:
            return t
        return _Held(t, self, key, storage.nbytes())

    def add(self, key: int, nbytes: int) -> None:
        entry = self.refs.setdefault(key, [0, nbytes])
        if entry[0] == 0:
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        entry[0] += 1

    def drop(self, key: int) -> None:
        entry = self.refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self.refs[key]


class _Held:
    """A saved tensor that counts its storage while autograd keeps it."""

    __slots__ = ("tensor", "account", "key")

    def __init__(self, tensor: torch.Tensor, account: SavedBytes, key: int, nbytes: int) -> None:
        self.tensor, self.account, self.key = tensor, account, key
        account.add(key, nbytes)

    def __del__(self) -> None:
        self.account.drop(self.key)


def _unpack(packed: Any) -> torch.Tensor:
    return packed.tensor if isinstance(packed, _Held) else packed


class StageProbe:
    """Busy time of this rank's stage per step (wall and thread CPU) and the step's start and end.

    Instance-attribute wrappers on the PipelineStage's forward/backward chunks, the schedule's
    loss computation (last stage only does work there) and `schedule.step`.
    """

    def __init__(self, engine: Engine) -> None:
        schedule = engine.schedule
        self.stage = schedule._stage
        self.account = SavedBytes({p.untyped_storage().data_ptr() for p in engine.core.parameters()})
        self.busy_wall = self.busy_cpu = 0.0
        self.start = self.end = 0.0
        self.mb_start = self.mb_bytes = 0
        self.stage.forward_one_chunk = self._timed(self.stage.forward_one_chunk, index_arg=0)
        self.stage.backward_one_chunk = self._timed(self.stage.backward_one_chunk, index_arg=None)
        schedule._maybe_compute_loss = self._timed(schedule._maybe_compute_loss, index_arg=3)
        step = schedule.step

        def timed_step(*args: Any, **kwargs: Any) -> Any:
            self.start = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                self.end = time.perf_counter()

        schedule.step = timed_step

    def _timed(self, fn: Callable, index_arg: int | None) -> Callable:
        """Time `fn`; for micro-batch 0's forward (+ loss) also note the saved bytes it added."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            first = index_arg is not None and args[index_arg] == 0
            if first and index_arg == 0:
                self.mb_start = self.account.live
            wall, cpu = time.perf_counter(), time.thread_time()
            out = fn(*args, **kwargs)
            self.busy_wall += time.perf_counter() - wall
            self.busy_cpu += time.thread_time() - cpu
            if first:
                self.mb_bytes = self.account.live - self.mb_start
            return out

        return timed

    def reset(self) -> None:
        self.busy_wall = self.busy_cpu = 0.0
        self.account.peak = self.account.live

    def kept_output_bytes(self) -> int:
        """Bytes of last-stage outputs the schedule keeps after the step for merging (`output_chunks`)."""
        chunks = [t for t in self.stage.output_chunks if isinstance(t, torch.Tensor)]
        return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in chunks}.values())


def measure(config: ModelConfig, layout: Layout, batch: int, spec: dict) -> dict:
    """Warm-up steps, timed steps, then one step under the saved-tensor hooks; this rank's record."""
    torch.manual_seed(0)
    engine = Engine(Transformer(config), layout, batch, batch, bf16=False)
    probe = StageProbe(engine)
    generator = torch.Generator().manual_seed(1234)
    mems, steps = None, []
    total = spec["warmup"] + spec["steps"] + 1
    for i in range(total):
        tokens = torch.randint(0, config.vocab_size, (batch, config.seq_len + 1), generator=generator)
        x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
        memory_step = i == total - 1
        dist.barrier()
        probe.reset()
        with probe.account.hooks() if memory_step else nullcontext():
            _, mems, _ = engine.forward_backward(CAUSAL, (x, y), mems)
        engine.core.zero_grad(set_to_none=True)
        if spec["warmup"] <= i < total - 1:
            steps.append((probe.start, probe.end, probe.busy_wall, probe.busy_cpu))
    return {"stage": layout.pp_rank, "steps": steps, "peak": probe.account.peak,
            "mb": probe.mb_bytes, "kept": probe.kept_output_bytes()}


def summarise(records: list[dict], p: int, schedule: str, m: int, micro: int) -> dict:
    """Per-stage median idle fraction over steps, where a step spans all stages' schedule.step calls."""
    records = sorted(records, key=lambda r: r["stage"])
    n = len(records[0]["steps"])
    spans = [max(r["steps"][k][1] for r in records) - min(r["steps"][k][0] for r in records)
             for k in range(n)]
    idle = [statistics.median(1 - r["steps"][k][2] / spans[k] for k in range(n)) for r in records]
    return {
        "p": p, "schedule": schedule, "m": m, "micro": micro, "theory": theory(p, m),
        "idle_mean": statistics.mean(idle), "idle": idle, "step_ms": 1e3 * statistics.median(spans),
        "busy_ms": [1e3 * statistics.median(s[2] for s in r["steps"]) for r in records],
        "cpu_share": [sum(s[3] for s in r["steps"]) / max(sum(s[2] for s in r["steps"]), 1e-9)
                      for r in records],
        "peak": [r["peak"] for r in records], "mb": [r["mb"] for r in records],
        "kept": [r["kept"] for r in records],
    }


def worker(spec: dict) -> None:
    """One torchrun process: every (schedule, m) of the spec in turn; rank 0 prints one JSON line each."""
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    config = ModelConfig(preset=spec["preset"], n_layers=spec["layers"], vocab_size=spec["vocab"],
                         dropout=0.0)
    layout = None
    for schedule, m in spec["runs"]:
        batch = m * spec["micro_batch"]
        settings = ParallelSettings(pp=world, dp_shard=1, pp_schedule=schedule, microbatches=m)
        settings = check_layout(settings, world, config, batch)
        if layout is None:
            layout = build_layout(settings, resolve_device("cpu"))
        else:
            layout = replace(layout, settings=settings)
        record = measure(config, layout, batch, spec)
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, record)
        if dist.get_rank() == 0:
            row = summarise(everyone, world, schedule, m, spec["micro_batch"])
            print(PREFIX + json.dumps(row), flush=True)
    dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------- parent


def run_stages(p: int, args: argparse.Namespace) -> list[dict]:
    """Launch p workers with torchrun once; stream their output and collect the result lines."""
    runs = [(s, m) for s in args.schedules for m in args.microbatches if s != "1f1b" or m >= p]
    for m in args.microbatches:
        if "1f1b" in args.schedules and m < p:
            print(f"p={p}: skipping 1f1b with m={m} (torch's Schedule1F1B needs m >= p)", flush=True)
    spec = {"runs": runs, "preset": args.preset, "layers": args.layers, "vocab": args.vocab,
            "micro_batch": args.micro_batch, "steps": args.steps, "warmup": args.warmup}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={p}",
               str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows, tail = [], []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as proc:
        for line in proc.stdout:
            if line.startswith(PREFIX):
                row = json.loads(line[len(PREFIX):])
                rows.append(row)
                print(f"p={p} {row['schedule']:5s} m={row['m']:2d}: idle {row['idle_mean']:.1%} "
                      f"(theory {row['theory']:.1%}), step {row['step_ms']:.0f} ms", flush=True)
            else:
                tail = (tail + [line])[-40:]
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun with {p} processes failed ({proc.returncode}):\n{''.join(tail)}")
    return rows


def first_below(rows: list[dict], p: int, schedule: str, bound: float) -> str:
    ms = sorted(r["m"] for r in rows if r["p"] == p and r["schedule"] == schedule and r["idle_mean"] < bound)
    tested = [r["m"] for r in rows if r["p"] == p and r["schedule"] == schedule]
    if not tested:
        return "not run"
    return f"m = {ms[0]}" if ms else f"none of the tested m ({', '.join(map(str, sorted(tested)))})"


def table(rows: list[dict]) -> list[str]:
    lines = ["| p | schedule | m | batch (seqs) | theory (p-1)/(m+p-1) | measured idle, mean of stages | "
             "idle per stage | busy ms per stage | step ms | CPU/wall inside chunks | "
             "saved activations MiB per stage (≈ micro-batches held) | logits kept by last stage MiB |",
             "|---:|---|---:|---:|---:|---:|---|---|---:|---|---|---:|"]
    for r in sorted(rows, key=lambda r: (r["p"], r["schedule"] != "gpipe", r["m"])):
        held = " / ".join(f"{peak / MIB:.1f} ({peak / mb:.1f})" if mb else f"{peak / MIB:.1f}"
                          for peak, mb in zip(r["peak"], r["mb"], strict=True))
        lines.append(
            f"| {r['p']} | {r['schedule']} | {r['m']} | {r['m'] * r['micro']} | {r['theory']:.1%} | "
            f"**{r['idle_mean']:.1%}** | {' / '.join(f'{v:.0%}' for v in r['idle'])} | "
            f"{' / '.join(f'{v:.0f}' for v in r['busy_ms'])} | {r['step_ms']:.0f} | "
            f"{' / '.join(f'{v:.2f}' for v in r['cpu_share'])} | {held} | {r['kept'][-1] / MIB:.1f} |")
    return lines


def report(rows: list[dict], args: argparse.Namespace, load: float, total_s: float) -> str:
    """Markdown: setup, machine caveat, the table, and the claim against theory and measurement."""
    config = ModelConfig(preset=args.preset, n_layers=args.layers, vocab_size=args.vocab, dropout=0.0)
    cores = os.cpu_count() or 1
    crowded = [p for p in args.stages if p > cores]
    m_theory = smallest_m_in_theory(CLAIM_STAGES, CLAIM)
    tested_theory = [m for m in sorted(args.microbatches) if theory(CLAIM_STAGES, m) < CLAIM]
    lines = [
        "# Claim C4: pipeline bubble of GPipe and 1F1B (torch.distributed.pipelining, gloo, CPU)", "",
        f"Model: preset `{args.preset}` widths (d{config.d_model} H{config.n_heads} ff{config.d_ff}), "
        f"{config.n_layers} layers split evenly over the stages (the first stage also holds the embedding, "
        f"the last the final norm and LM head), vocab {config.vocab_size}, segment {config.seq_len}, "
        f"memory {config.mem_len} carried between steps, dropout 0, causal loss, fp32, random tokens. "
        f"Micro-batch size fixed at {args.micro_batch} sequences, so the global batch is m x "
        f"{args.micro_batch} sequences and grows with m (the usual way to shrink the bubble). Training "
        f"steps go through lmforge's `Engine.forward_backward` (no optimizer step). {args.warmup} warm-up "
        f"step(s), then the median of {args.steps} timed steps; activation memory from one more step.", "",
        "**Measured idle** of a stage = 1 - (its time inside `forward_one_chunk`, `backward_one_chunk` "
        "and, on the last stage, the loss) / (step span from the earliest start to the latest end of "
        "`schedule.step` over all stages, after a barrier). Communication waits and the schedule's own "
        "Python overhead count as idle. Theory assumes equal stages and free communication; here the "
        "stages are not equal (see busy ms), so the slowest stage sets the pace and the others idle more. "
        "**Saved activations** = peak of the distinct storage bytes autograd holds for backward during "
        "the step (saved_tensors_hooks; parameters excluded), and in brackets that peak over the bytes "
        "micro-batch 0's forward (+ loss) saved. **CPU/wall inside chunks** = thread CPU time over wall "
        "time inside the timed chunks: near 1 means the stage ran uninterrupted, lower means it was "
        "descheduled while busy.", "",
        f"**Machine: {cores} CPU cores.** " + (
            f"p = {', '.join(map(str, crowded))} runs more processes than cores, so stages time-share cores: "
            "a stage counted as busy may be waiting for a core, and a stage counted as idle lends its core "
            "to another. Those measured idle fractions are distorted (CPU/wall inside chunks shows by how "
            "much) and do not show what a real pipeline over separate devices would do; "
            + (f"p = {min(args.stages)} is the clean reference. " if min(args.stages) <= cores else "")
            if crowded else "Every stage has a core of its own. ")
        + (f"Other processes used {load:.0%} of the machine during the run, so even stages that have a core "
           "on paper competed for one; compare CPU/wall inside chunks." if load > 0.1 else ""),
        "",
        *table(rows), "",
        f"## The guide's claim: bubble < {CLAIM:.0%} with GPipe at {CLAIM_STAGES} stages", "",
        f"- Theory: (p-1)/(m+p-1) < {CLAIM:.0%} at p = {CLAIM_STAGES} needs m >= {m_theory} micro-batches "
        f"(m = 16 gives {theory(CLAIM_STAGES, 16):.1%}); of the tested m, "
        + (f"{', '.join(map(str, tested_theory))} reach it." if tested_theory else "none reach it."),
        "- The claim therefore holds only with enough micro-batches; with m = p = 4 the bubble is "
        f"{theory(CLAIM_STAGES, CLAIM_STAGES):.1%}. 1F1B has the same bubble as GPipe; it saves activation "
        "memory (about p micro-batches on the first stage instead of all m), not time.",
    ]
    for p in sorted(args.stages):
        for schedule in args.schedules:
            lines.append(f"- Measured, p = {p}, {schedule}: first tested m with mean idle < {CLAIM:.0%}: "
                         f"{first_below(rows, p, schedule, CLAIM)}"
                         + (" (oversubscribed cores, see above)." if p > cores else "."))
    lines += ["", "The last column is what the schedule keeps after the step in `output_chunks` (outputs "
              "merged for the caller); the Engine asks for none (`return_outputs=False`), so it should be 0. "
              "These bytes are not in the saved-activation column.", "",
              f"Total wall time {total_s / 60:.1f} min; foreign CPU load during the run: {load:.0%} of the "
              "machine (other processes' CPU time over the machine's capacity, from /proc/stat)."]
    return "\n".join(lines) + "\n"


def parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=parse_ints, default=[2, 4], help="pipeline stages (= processes)")
    parser.add_argument("--microbatches", type=parse_ints, default=[4, 8, 16, 24, 32])
    parser.add_argument("--schedules", type=lambda s: s.split(","), default=["gpipe", "1f1b"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=2, help="sequences per micro-batch")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=1024)
    args = parser.parse_args()
    start, t0 = machine_jiffies(), time.perf_counter()
    own0 = time.process_time(), os.times()
    rows = [row for p in args.stages for row in run_stages(p, args)]
    children = os.times()
    own = (time.process_time() - own0[0] + children.children_user - own0[1].children_user
           + children.children_system - own0[1].children_system)
    text = report(rows, args, foreign_load(start, own), time.perf_counter() - t0)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "claim_c4_pipeline_bubble.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
