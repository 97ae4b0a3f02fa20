"""Guide claim C3: tensor parallelism cuts memory by 60% for layers over 1B parameters.

    python benchmarks/claim_c3_tensor_parallel_memory.py [--presets base-768,large-1024,xl-1536]

Per-rank parameter + gradient + AdamW bytes at tp = 1, 2, 4, from `lmforge.parallel.plan`: the
model is built on the meta device (no memory) and each parameter gets the share the tensor
parallel code gives it. tests/dist/test_plan.py checks that plan against the shards real
torchrun workers hold. Reported for the whole model and for one Transformer block (the
"layer" of the claim); no training, so the largest presets cost nothing.
Writes benchmarks/results/claim_c3_tensor_parallel_memory.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmforge.model import ModelConfig
from lmforge.parallel import ParallelSettings
from lmforge.parallel.plan import memory_plan

RESULTS = Path(__file__).parent / "results"
DEGREES = (1, 2, 4)
VOCAB = 32768


def one_block(config: ModelConfig) -> ModelConfig:
    """The same widths with one layer and a vocabulary of tp tokens: a single block (+ final norm)."""
    return config.model_copy(update={"n_layers": 1, "vocab_size": max(DEGREES)})


def per_rank_bytes(config: ModelConfig, tp: int) -> tuple[int, int]:
    """(parameter elements, param + grad + AdamW bytes) of rank 0 at tensor-parallel degree tp."""
    share = memory_plan(config, ParallelSettings(tp=tp, dp_shard=1))[0]
    return share.parameters, share.total_bytes


def rows(preset: str) -> list[str]:
    config = ModelConfig(preset=preset, vocab_size=VOCAB)
    out = []
    for scope, cfg in (("whole model", config), ("one block", one_block(config))):
        base_params, base_bytes = per_rank_bytes(cfg, 1)
        for tp in DEGREES:
            params, total = per_rank_bytes(cfg, tp)
            out.append(f"| {preset} | {scope} | {base_params:,} | {tp} | {params:,} | {total / 2**20:,.1f} | "
                       f"{total / base_bytes - 1:+.1%} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="base-768,large-1024,xl-1536")
    args = parser.parse_args()
    lines = ["# Claim C3: per-rank memory under tensor parallelism", "",
             "fp32 parameters + fp32 gradients + AdamW's two fp32 moments (16 bytes per parameter held), "
             f"rank 0 of a tp-only layout, vocabulary {VOCAB:,} (split over tp with the tied "
             "embedding/LM head). "
             "Column-parallel: W_q, W_k, W_v, MLP in (weights and biases); row-parallel: W_o, MLP out "
             "(biases replicated); XL's W_r, u, v split by head; LayerNorms replicated. "
             "Activations and communication buffers are not counted.", "",
             "| preset | scope | parameters (tp=1) | tp | parameters per rank | MiB per rank "
             "| change vs tp=1 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for preset in args.presets.split(","):
        lines += rows(preset.strip())
    lines += ["", "Guide's claim: -60% for layers over 1B parameters. Splitting a layer over tp ranks keeps "
              "1/tp of its matrices plus the replicated LayerNorms and row-parallel biases, so the saving is "
              "bounded by 1 - 1/tp: at most -50% at tp=2 and -75% at tp=4. -60% therefore needs tp >= 3; "
              "at tp=4 our blocks come within a fraction of a percent of the -75% bound (table). The "
              "claim's >1B-parameter scale is reached by the whole xl-1536 model, not by any single layer "
              "(see the 'one block' rows); the fraction saved does not depend on size beyond the "
              "replicated LayerNorms, which shrink in relative terms as layers grow."]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "claim_c3_tensor_parallel_memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
