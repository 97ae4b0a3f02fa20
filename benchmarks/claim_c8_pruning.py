"""Guide claim C8: "40% of the weights pruned with < 1% accuracy loss"; accuracy, size and latency
against sparsity 0-70% for unstructured, head and FFN-neuron pruning of an SST-2 classifier.

    .venv/bin/python benchmarks/claim_c8_pruning.py                       # pretrain + fine-tune + 22 prunes
    .venv/bin/python benchmarks/claim_c8_pruning.py --model runs/x/models/y-classify --steps 100

The classifier: the `tiny` preset pretrained briefly (finetune_quality.py's recipe) and fine-tuned
on an SST-2 training slice (dev slice for the dev metric), or `--model`. Every variant is made by
`lmforge prune`'s function: L1-regularised fine-tuning (`--steps`, `--l1`), then pruning; at 40%
each mode also runs without the L1 penalty, to show what the penalty (not the pruning) buys.
Accuracy is on the SST-2 test file (872 rows); size is model.safetensors on disk and gzip'd (the
only way unstructured zeros shrink a dense file); latency is the median of interleaved forward
passes of backbone + head at batch 1 and 32, all variants taking turns so load drifts hit all
alike. Writes benchmarks/results/claim_c8_pruning.md.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

import torch
from finetune_quality import sst2_classifier
from realdata import data_dir

from lmforge.compress.prune import prune
from lmforge.compress.prune_config import PruneConfig
from lmforge.compress.report import interleaved_latency, variant
from lmforge.model.bundle import load_bundle
from lmforge.train.finetune import Split, score
from lmforge.train.finetune_data import encode_examples, read_examples

RESULTS = Path(__file__).parent / "results" / "claim_c8_pruning.md"
MODES = ("unstructured", "heads", "ffn")


def test_set(folder: Path, test: Path) -> tuple[Split, list[str]]:
    """SST-2 test encoded the way the folder's head was trained; its label names."""
    bundle = load_bundle(folder)
    usage, labels = bundle.usage("classify"), bundle.head("classify", "classify")["labels"]
    examples = read_examples(test, "classify", "sentence", "label")
    encoded = encode_examples(bundle.tokenizer, examples, "classify", labels, usage["max_len"])
    return Split(examples, encoded), labels


def measure(folder: Path, split: Split, labels: list[str]) -> dict[str, float]:
    """Test accuracy, parameters, and the weights' size on disk, raw and gzip'd."""
    bundle = load_bundle(folder)
    usage = bundle.usage("classify")
    accuracy = score(
        bundle.task_model("classify"),
        "classify",
        "classify",
        split,
        labels,
        bundle.tokenizer,
        usage["max_len"],
        1,
    )["accuracy"]
    weights = (folder / "model.safetensors").read_bytes()
    return {
        "accuracy": accuracy,
        "parameters": bundle.model.num_parameters(),
        "bytes": len(weights),
        "gzip_bytes": len(gzip.compress(weights, compresslevel=6)),
    }


def latencies(folders: dict[str, Path], seq_len: int, rounds: int) -> dict[str, dict[int, float]]:
    """Median ms of one forward at batch 1 and 32, the variants interleaved round by round
    (`lmforge compress-report`'s measurement)."""
    forwards = [variant(folder, seq_len).forward for folder in folders.values()]
    return dict(zip(folders, interleaved_latency(forwards, seq_len, rounds), strict=True))


def variants(source: Path, root: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Every (mode, sparsity) pruned from `source`, plus each mode at 40% without the L1 penalty."""
    runs: dict[str, dict] = {"dense": {"mode": "-", "sparsity": 0.0, "l1": 0.0, "folder": source}}
    plan = [(mode, s, args.l1) for mode in args.modes for s in args.sparsities if s > 0]
    plan += [(mode, 0.4, 0.0) for mode in args.modes if args.l1 > 0]
    for mode, sparsity, l1 in plan:
        name = f"{mode}-{sparsity:.0%}" + ("" if l1 else "-no-l1")
        cfg = PruneConfig(
            model=source, mode=mode, sparsity=sparsity, l1=l1, steps=args.steps, lr=args.lr, out=root / name
        )
        metrics = prune(cfg).metrics
        runs[name] = {"mode": mode, "sparsity": metrics["sparsity"], "l1": l1, "folder": cfg.output}
    return runs


def report(runs: dict[str, dict], args: argparse.Namespace, seconds: float) -> str:
    dense = runs["dense"]
    rows = []
    for name, r in runs.items():
        rows.append(
            f"| {name} | {r['mode']} | {r['sparsity']:.2f} | {r['l1']:g} | {r['accuracy']:.3f} "
            f"| {100 * (r['accuracy'] - dense['accuracy']):+.1f} | {r['parameters']:,} "
            f"| {r['bytes'] / dense['bytes']:.2f} | {r['gzip_bytes'] / dense['gzip_bytes']:.2f} "
            f"| {r['ms1']:.2f} ({dense['ms1'] / r['ms1']:.2f}x) "
            f"| {r['ms32']:.1f} ({dense['ms32'] / r['ms32']:.2f}x) |"
        )
    forty = [
        f"- **{mode}**: {runs[f'{mode}-40%']['sparsity']:.0%} removed, accuracy "
        f"{100 * (runs[f'{mode}-40%']['accuracy'] - dense['accuracy']):+.1f} points, file "
        f"{runs[f'{mode}-40%']['bytes'] / dense['bytes']:.2f}x of dense, batch-32 speed-up "
        f"{dense['ms32'] / runs[f'{mode}-40%']['ms32']:.2f}x"
        for mode in args.modes
        if f"{mode}-40%" in runs
    ]
    made = (
        f"`{args.model}`"
        if args.model
        else f"`tiny`, pretrained {args.pretrain_steps} steps, fine-tuned "
        f"{args.finetune_steps} steps on {args.train} SST-2 rows"
    )
    return "\n".join(
        [
            "# Claim C8: pruning 40% with < 1% accuracy loss",
            "",
            f"SST-2 classifier ({made}); every variant: "
            f"{args.steps} steps of L1-regularised fine-tuning (lambda {args.l1}, lr {args.lr}) then "
            f"pruning. Accuracy on SST-2 test (872 rows); size = model.safetensors (x of dense), raw and "
            f"gzip'd; latency = median forward ms over {args.rounds} interleaved rounds "
            f"({torch.get_num_threads()} threads), speed-up vs dense in brackets. Sparsity = share of block "
            f"weights zeroed (unstructured) or of heads / MLP neurons removed. Total {seconds / 60:.1f} min.",
            "",
            "| variant | mode | sparsity | L1 | test acc | delta (points) | parameters | size | gzip size "
            "| ms @1 | ms @32 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Where 40% lands:",
            *forty,
            "",
            "Unstructured zeros keep every dense shape: the file and the latency stay those of the dense "
            "model (only the gzip'd size shrinks); heads and FFN pruning slice the matrices, so parameters, "
            "file and latency fall with the removed share of the blocks (embeddings and the head are not "
            "pruned).",
            f"Command: `.venv/bin/python {' '.join(sys.argv)}`.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared datasets folder (default: ../shared/data)")
    parser.add_argument("--model", type=Path, help="fine-tuned SST-2 classifier folder (head 'classify')")
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--train", type=int, default=4000, help="SST-2 training rows for the fine-tune")
    parser.add_argument("--dev", type=int, default=600, help="SST-2 dev rows (pruning's dev metric)")
    parser.add_argument("--steps", type=int, default=60, help="L1 fine-tuning steps per variant")
    parser.add_argument("--l1", type=float, default=1e-4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument(
        "--sparsities",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    )
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES))
    parser.add_argument("--rounds", type=int, default=30, help="interleaved latency rounds")
    args = parser.parse_args()
    start = time.time()
    data = data_dir(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = args.model or sst2_classifier(data, root, args)
        runs = variants(source, root / "pruned", args)
        split, labels = test_set(source, data / "sst2/test.tsv")
        for run in runs.values():
            run.update(measure(run["folder"], split, labels))
        folders = {name: run["folder"] for name, run in runs.items()}
        seq_len = load_bundle(source).usage("classify")["max_len"]
        for name, ms in latencies(folders, seq_len, args.rounds).items():
            runs[name].update({f"ms{size}": ms[size] for size in (1, 32)})
        text = report(runs, args, time.time() - start)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
