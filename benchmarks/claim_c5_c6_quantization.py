"""Guide claims C5 ("static INT8: 4x smaller, 3x faster, < 2% accuracy loss") and C6 ("dynamic
quantisation: 50% less memory"): every INT8 method against fp32 eager on an SST-2 classifier.

    .venv/bin/python benchmarks/claim_c5_c6_quantization.py                 # pretrain + fine-tune `small`
    .venv/bin/python benchmarks/claim_c5_c6_quantization.py --model runs/x/models/y-classify

The classifier: the `small` preset pretrained briefly (finetune_quality.py's recipe) and fine-tuned
on an SST-2 slice, or `--model`. Variants: `lmforge quantize` folders (torchao eager: dynamic,
static, weight-only; dynamic with INT8 embeddings), torchao dynamic compiled by inductor (freezing
on), and the exported ONNX graph in ONNX Runtime, fp32 and INT8 (`quantize_dynamic`). For each:
weights on disk, peak resident memory of a fresh process that loads it and runs one batch of 32,
median latency at batch 1 and 32 over interleaved rounds (every variant once per round), and
SST-2 test accuracy (872 rows) through the same scoring as `lmforge evaluate`. Ratios are against
fp32 eager in the same run. Writes benchmarks/results/claim_c5_c6_quantization.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from finetune_quality import sst2_classifier
from realdata import data_dir

from lmforge.compress.quantize import QuantizeConfig, quantize
from lmforge.compress.report import Variant, markdown, measure, variant
from lmforge.export.run import export_model
from lmforge.model.bundle import load_bundle

RESULTS = Path(__file__).parent / "results" / "claim_c5_c6_quantization.md"
HEAD = "classify"
METHODS = (("torchao dynamic", {"method": "dynamic"}),
           ("torchao dynamic + INT8 embeddings", {"method": "dynamic", "embeddings": True}),
           ("torchao static (calibrated)", {"method": "static"}),
           ("torchao weight-only", {"method": "weight-only"}))


def classifier(data: Path, root: Path, args: argparse.Namespace) -> Path:
    return sst2_classifier(data, root, args, preset="small")


def compiled_variant(eager: Variant) -> Variant:
    """torchao dynamic INT8 compiled by inductor with freezing (what torchao's CPU speed needs).
    Its peak memory is measured on the eager variant's folder (compiling in a child would add the
    compiler's own memory)."""
    import torch._inductor.config as inductor

    inductor.freezing = True
    model = torch.compile(eager.bundle.task_model(HEAD), dynamic=True)

    def forward(batch: int, seq_len: int) -> object:
        ids = torch.randint(eager.bundle.config.vocab_size, (batch, seq_len))
        with torch.inference_mode():
            return model(HEAD, ids, torch.ones_like(ids, dtype=torch.bool))

    return replace(eager, name=eager.name + " + inductor", forward=forward, task_model=model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="an SST-2 classifier folder (default: build one)")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--train", type=int, default=8000, help="SST-2 training rows")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    data = data_dir()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.time()
        model = args.model or classifier(data, root, args)
        bundle = load_bundle(model)
        seq_len = bundle.usage(HEAD)["max_len"]
        variants = [replace(variant(model, seq_len), name="fp32 eager")]
        for name, settings in METHODS:
            cfg = QuantizeConfig(model=model, out=root / name.replace(" ", "-"), **settings)
            variants.append(replace(variant(quantize(cfg).model_dir, seq_len), name=name))
        variants.append(compiled_variant(variants[1]))
        for name, fmt in (("ONNX Runtime fp32", "onnx"), ("ONNX Runtime INT8", "onnx-int8")):
            exported = export_model(model, fmt, root / "exports" / fmt).out
            variants.append(replace(variant(exported, seq_len), name=name))
        rows = measure(variants, seq_len, args.rounds, HEAD, data / "sst2/test.tsv", 1, "sentence")
        report = "\n".join([
            "# C5 / C6: INT8 quantisation against fp32 eager", "",
            f"Classifier: `{bundle.config.d_model}`-wide, {bundle.config.n_layers} layers, vocab "
            f"{bundle.config.vocab_size}, sequences of {seq_len} tokens; SST-2 test (872 rows). "
            f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}; median of {args.rounds} interleaved rounds; "
            f"{time.time() - started:.0f} s in all.", "",
            markdown(rows, "accuracy"),
            "Guide: static INT8 4x smaller, 3x faster, < 2% accuracy loss (C5); dynamic quantisation "
            "50% less memory (C6).", ""])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
