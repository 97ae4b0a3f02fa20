"""Training throughput and MFU of our model vs a same-size Hugging Face GPT-2, in one run.

    python benchmarks/train_throughput.py [--seconds 4] [--batch 8]

Measures this machine's fp32/bf16 matmul peak, then tokens/s of full training steps (forward,
backward, AdamW) for `tiny` and `small` with each position encoding, in fp32 and bf16 autocast,
and GPT-2 (transformers) of the same width/depth/context as the baseline. MFU is
tokens/s x FLOPs/token (6N plus attention, see lmforge.model.info) over the measured fp32 peak.
Foreign CPU load during the run is read from /proc/stat and printed beside the table, because a
busy neighbour halves these figures. Writes benchmarks/results/train_throughput.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge.model import ModelConfig, Transformer, flops_per_token
from lmforge.train.metrics import measure_peak_gflops

RESULTS = Path(__file__).parent / "results"


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def foreign_load(start: tuple[int, int], own_cpu_seconds: float) -> float:
    """Share of the machine's capacity used by other processes since `start`."""
    busy, total = machine_jiffies()
    own = own_cpu_seconds * os.sysconf("SC_CLK_TCK")
    return max(0.0, (busy - start[0] - own) / max(total - start[1], 1))


def time_steps(step, seconds: float) -> float:
    """Median seconds per training step after two warm-up steps."""
    step(), step()
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours_step(config: ModelConfig, batch: int, bf16: bool):
    model = Transformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    x = torch.randint(0, config.vocab_size, (batch, config.seq_len))
    # Steady state of XL training: a full memory of mem_len states per layer.
    mems = [torch.randn(batch, config.mem_len, config.d_model) for _ in range(config.n_layers)]

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            out = model(x, mems if config.mem_len else None)
            loss = F.cross_entropy(out.logits.float().flatten(0, 1), x.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, model.num_parameters()


def gpt2_step(config: ModelConfig, batch: int, bf16: bool):
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=config.vocab_size, n_positions=config.seq_len,
                                    n_embd=config.d_model, n_layer=config.n_layers, n_head=config.n_heads,
                                    n_inner=config.d_ff, resid_pdrop=config.dropout,
                                    embd_pdrop=config.dropout, attn_pdrop=config.dropout))
    hf.train()
    optimizer = torch.optim.AdamW(hf.parameters(), lr=1e-4, foreach=True)
    x = torch.randint(0, config.vocab_size, (batch, config.seq_len))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            logits = hf(input_ids=x).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), x.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in hf.parameters())


def measure(args) -> list[dict]:
    rows = []
    for preset in ("tiny", "small"):
        variants = [(pos, ModelConfig(preset=preset, position=pos)) for pos in ("xl", "absolute", "rotary")]
        variants.append(("absolute, no memory", ModelConfig(preset=preset, position="absolute", mem_len=0)))
        for precision in ("fp32", "bf16"):
            bf16 = precision == "bf16"
            for label, config in variants:
                step, params = ours_step(config, args.batch, bf16)
                rows.append(_row(preset, f"lmforge {label}", precision, config, params, step, args))
            base = ModelConfig(preset=preset, mem_len=0)
            step, params = gpt2_step(base, args.batch, bf16)
            rows.append(_row(preset, "HF GPT-2 (baseline)", precision, base, params, step, args,
                             flops_config=ModelConfig(preset=preset, position="absolute", mem_len=0)))
    return rows


def _row(preset, label, precision, config, params, step, args, flops_config=None) -> dict:
    seconds = time_steps(step, args.seconds)
    tok_s = args.batch * config.seq_len / seconds
    row = {"preset": preset, "model": label, "precision": precision, "params": params,
           "context": f"{config.seq_len}+{config.mem_len}", "tokens_per_s": tok_s,
           "flops_per_token": flops_per_token(flops_config or config)}
    print(f"{preset:5s} {label:24s} {precision}: {tok_s:9,.0f} tok/s", flush=True)
    return row


def report(rows: list[dict], peaks: dict, load: float, args) -> str:
    def find(preset, model, precision):
        key = (preset, model, precision)
        return next(r for r in rows if (r["preset"], r["model"], r["precision"]) == key)

    lines = [
        "# Training throughput (forward + backward + AdamW step)", "",
        f"Machine: {torch.get_num_threads()} threads; measured matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16']:.0f} GFLOP/s (2048x2048). Foreign CPU load during the run: {load:.0%} of the "
        f"machine. Batch {args.batch}; context = segment + memory tokens; median step of >= {args.seconds}s.",
        "", "| preset | model | precision | params | context | tokens/s | MFU (of fp32 peak) |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        mfu = r["tokens_per_s"] * r["flops_per_token"] / (peaks["fp32"] * 1e9)
        lines.append(f"| {r['preset']} | {r['model']} | {r['precision']} | {r['params'] / 1e6:.2f}M | "
                     f"{r['context']} | {r['tokens_per_s']:,.0f} | {mfu:.0%} |")
    lines += ["", "## Ratios against the targets of issue 2", "",
              "| ratio | tiny | small | target |", "|---|---:|---:|---|"]
    ratios = [
        ("bf16 / fp32 tokens/s (xl)", "lmforge xl", "bf16", "lmforge xl", "fp32", ">= 1.4"),
        ("xl cost vs absolute (fp32 time ratio)", "lmforge absolute", "fp32", "lmforge xl", "fp32", "<= 1.3"),
        ("absolute (same memory) / HF GPT-2", "lmforge absolute", "fp32", "HF GPT-2 (baseline)", "fp32",
         ">= 1.2"),
        ("absolute, no memory / HF GPT-2", "lmforge absolute, no memory", "fp32", "HF GPT-2 (baseline)",
         "fp32", ">= 1.2"),
    ]
    for name, num, num_p, den, den_p, target in ratios:
        cells = [find(p, num, num_p)["tokens_per_s"] / find(p, den, den_p)["tokens_per_s"]
                 for p in ("tiny", "small")]
        lines.append(f"| {name} | {cells[0]:.2f} | {cells[1]:.2f} | {target} |")
    small_xl = find("small", "lmforge xl", "fp32")
    mfu = small_xl["tokens_per_s"] * small_xl["flops_per_token"] / (peaks["fp32"] * 1e9)
    lines += ["", f"MFU of `small` with `xl` attention, fp32: {mfu:.0%} of the measured fp32 peak "
              "(target >= 50%)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timing budget per configuration")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    start, own_start = machine_jiffies(), time.process_time()
    peaks = {"fp32": measure_peak_gflops(2048, 2.0), "bf16": measure_peak_gflops(2048, 2.0, torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s", flush=True)
    rows = measure(args)
    load = foreign_load(start, time.process_time() - own_start)
    text = report(rows, peaks, load, args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_throughput.md").write_text(text)
    (RESULTS / "train_throughput.json").write_text(json.dumps({"peaks": peaks, "rows": rows}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
