"""Guide claim C13 ("L1 pruning, TensorRT / TFLite FP16 speed-ups on the edge"): what this machine
allows. The edge stand-in is this CPU with ONNX Runtime, fp32 and INT8, against PyTorch fp32
eager, on an SST-2 classifier; and the edge batch: the largest batch whose measured peak memory
fits a memory budget.

    .venv/bin/python benchmarks/claim_c13_edge.py                  # builds C5's `small` classifier
    .venv/bin/python benchmarks/claim_c13_edge.py --model runs/x/models/y-classify

Size on disk, peak resident memory of a fresh process running a batch of 32, median latency at
batch 1 and 32 over interleaved rounds, SST-2 test accuracy (`compress-report`'s measurements).
Writes benchmarks/results/claim_c13_edge.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from claim_c5_c6_quantization import HEAD, classifier
from realdata import data_dir

from lmforge.compress.report import markdown, measure, variant
from lmforge.export.edge_batch import MemoryBudgetError, MemoryLine, model_forward
from lmforge.export.edge_batch import measure as measure_memory
from lmforge.export.run import export_model
from lmforge.model.bundle import load_bundle

RESULTS = Path(__file__).parent / "results" / "claim_c13_edge.md"
BUDGETS_MB = (64, 256, 1024)

NOT_HERE = """\
Not measurable here:
- **TensorRT** (FP16 / INT8 engines) needs an NVIDIA GPU and its CUDA libraries; this machine
  has neither. Published: FP16 about 2.3x over FP32 on BERT-base (L4), INT8 only through explicit
  Q/DQ since TensorRT 10.1 (see ../shared/reference/anchors-data-compress.md).
- **TFLite** is now LiteRT (`ai-edge-litert`); its converter starts from TensorFlow or
  `litert-torch`, neither of which lmforge depends on, so it was not tried. FP16 on this CPU has
  no fast path in any case (torch fp16 matmul runs at about 1 GFLOP/s here, env-probe.md).
- **ExecuTorch** (`lmforge export --format executorch`, the `executorch` extra, XNNPACK) runs
  here when installed; it is not in the default environment (about 650 MB), so it is not timed.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="an SST-2 classifier folder (default: build one)")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    data = data_dir()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.time()
        model = args.model or classifier(data, root, args)
        bundle = load_bundle(model)
        seq_len = bundle.usage(HEAD)["max_len"]
        variants = [replace(variant(model, seq_len), name="PyTorch fp32 eager")]
        for name, fmt in (("ONNX Runtime fp32", "onnx"), ("ONNX Runtime INT8", "onnx-int8")):
            variants.append(replace(variant(export_model(model, fmt, root / fmt).out, seq_len), name=name))
        rows = measure(variants, seq_len, args.rounds, HEAD, data / "sst2/test.tsv", 1, "sentence")
        line = measure_memory(model_forward(bundle.model, bundle.config.vocab_size, torch.device("cpu")),
                              seq_len, torch.device("cpu"))
        batches = ", ".join(f"{mb} MB -> {_batch(line, mb)}" for mb in BUDGETS_MB)
        report = "\n".join([
            "# C13: the edge on this CPU", "",
            f"Classifier `{bundle.config.d_model}`-wide, {bundle.config.n_layers} layers, sequences of "
            f"{seq_len} tokens, SST-2 test; {torch.get_num_threads()} threads; median of {args.rounds} "
            f"interleaved rounds; {time.time() - started:.0f} s in all.", "",
            markdown(rows, "accuracy"),
            f"Edge batch (PyTorch fp32): peak memory = {line.fixed / 1e6:.1f} MB + "
            f"{line.per_sequence / 1e6:.2f} MB per sequence of {seq_len} tokens (fitted to batches "
            f"{', '.join(str(b) for b, _ in line.measured)}); largest batch with a 20% margin for a "
            f"budget of {batches}.", "", NOT_HERE])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(report)
    print(report)
    return 0


def _batch(line: MemoryLine, megabytes: int) -> str:
    try:
        return str(line.largest_batch(megabytes * 1e6))
    except MemoryBudgetError:
        return "none"


if __name__ == "__main__":
    sys.exit(main())
