"""Guide claim C12: "EWC prevents catastrophic forgetting": old-task accuracy after incremental rounds
with elastic weight consolidation, against plain fine-tuning and replay, on class-incremental BANKING77.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/claim_c12_ewc.py          # 3 seeds, ~45 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/claim_c12_ewc.py --quick  # smoke run, prints only

One thread: on the shared 2-core machine two OpenMP threads made a training step 13x slower (2.35 s
against 0.17 s at batch 32) whenever another process was busy.

The 77 intents are split (seeded, the same for every seed) into three groups A, B and C; one classify
head covers all 77. The base is `finetune_quality`'s briefly pretrained `tiny` model fine-tuned on
A's training rows (with the 77-label head), then two incremental rounds run through
`lmforge.improve.incremental.improve_train` exactly as `lmforge improve train` does: round 1 on B's
rows, round 2 on C's, the same steps and rate for every method:

- plain: lambda 0 (the unit tests show such a round ends with `finetune`'s own weights);
- replay: lambda 0, 30% of each round's examples drawn from the earlier groups' rows;
- EWC separate and EWC online (decay 0.9) at each lambda of the sweep: round 1's Fisher is taken on
  A's training rows (`fisher_data`), round 2 continues from the state the round-1 folder carries
  (separate: a pair for A at the base weights and one for B at round 1's; online: their decayed sum).

Quality: accuracy on each group's BANKING77 test rows (40 per intent) predicting among all 77
intents, after each round; one evaluation at the end of every run, so nothing is selected on test
data. Forgetting of A = base accuracy on A minus accuracy on A after round 2.
Writes benchmarks/results/claim_c12_ewc.md (not with --quick).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from claim_c1_position_encoding import mean_std
from finetune_quality import pretrained_model
from realdata import data_dir
from train_throughput import foreign_load, machine_jiffies

from lmforge.data.tasks import TextExample, read_text_labels
from lmforge.improve.incremental import ImproveConfig, improve_train
from lmforge.model.bundle import load_bundle
from lmforge.train.finetune import finetune, score_file
from lmforge.train.finetune_config import FinetuneConfig

RESULTS = Path(__file__).parent / "results" / "claim_c12_ewc.md"
GROUPS = ("A", "B", "C")


def split_intents(data: Path) -> dict[str, list[str]]:
    """The 77 intents shuffled with seed 0 and cut into thirds (26, 26, 25)."""
    intents = sorted(json.loads((data / "banking77/categories.json").read_text()))
    random.Random(0).shuffle(intents)
    return {"A": intents[:26], "B": intents[26:52], "C": intents[52:]}


def write_rows(path: Path, rows: list[TextExample]) -> Path:
    lines = (json.dumps({"text": r.text, "label": r.label}) + "\n" for r in rows)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def group_files(data: Path, root: Path, limit: int | None) -> dict[str, Path]:
    """Per group its train and test rows (JSONL text/label), and the rows seen before B and before C."""
    root.mkdir(parents=True, exist_ok=True)
    train = read_text_labels(data / "banking77/train.csv", "text", "category")
    test = read_text_labels(data / "banking77/test.csv", "text", "category")
    files = {}
    for group, intents in split_intents(data).items():
        wanted = set(intents)
        rows = [r for r in train if r.label in wanted]
        random.Random(1).shuffle(rows)
        files[f"{group}.train"] = write_rows(root / f"{group}.train.jsonl", rows[:limit])
        tested = [r for r in test if r.label in wanted]
        files[f"{group}.test"] = write_rows(root / f"{group}.test.jsonl", tested)
    seen = root / "AB.train.jsonl"
    seen.write_text(files["A.train"].read_text() + files["B.train"].read_text())
    files["AB.train"] = seen
    return files


def accuracies(folder: Path, files: dict[str, Path], groups: tuple[str, ...] = GROUPS) -> dict[str, float]:
    """Test accuracy per group (77-way prediction), scored as `lmforge evaluate` scores."""
    bundle = load_bundle(folder)
    return {g: score_file(bundle, "classify", "classify", files[f"{g}.test"])["accuracy"] for g in groups}


def base_model(pretrained: Path, files: dict[str, Path], intents: list[str], root: Path, seed: int,
               args: argparse.Namespace) -> Path:
    """The pretrained model fine-tuned on A's rows with a head over all 77 intents."""
    cfg = FinetuneConfig(model=pretrained, task="classify", out=root / f"base-{seed}", steps=args.base_steps,
                         eval_every=args.base_steps, batch_size=args.batch, lr=args.base_lr,
                         max_len=args.max_len, seed=seed, data={"train": files["A.train"]})
    return finetune(cfg, resume=None, labels=sorted(intents)).model_dir


def methods(args) -> list[dict]:
    """Every method's settings for improve_train (the same steps and rate for all)."""
    runs = [{"name": "plain", "ewc_lambda": 0.0}, {"name": "replay", "ewc_lambda": 0.0, "replay": True}]
    for mode in ("separate", "online"):
        runs += [{"name": f"EWC {mode} lambda {lam:g}", "ewc_lambda": lam, "mode": mode}
                 for lam in args.lambdas]
    return runs


def incremental(base: Path, files: dict[str, Path], root: Path, seed: int, method: dict,
                args: argparse.Namespace) -> dict:
    """Rounds 1 (B) and 2 (C) from `base`; accuracies after each, and the seconds both took."""
    started, folder, scores = time.perf_counter(), base, {}
    for n, (data, before) in enumerate((("B", "A"), ("C", "AB")), 1):
        ewc = method["ewc_lambda"] > 0
        out = root / f"{method['name'].replace(' ', '_')}-{seed}-r{n}"
        cfg = ImproveConfig(
            base=folder, data=files[f"{data}.train"], out=out, ewc_lambda=method["ewc_lambda"],
            mode=method.get("mode", "separate"), decay=args.decay,
            fisher_data=files["A.train"] if ewc and n == 1 else None, fisher_samples=args.fisher_samples,
            replay=files[f"{before}.train"] if method.get("replay") else None, replay_ratio=args.replay_ratio,
            steps=args.steps, eval_every=args.steps, batch_size=args.batch, lr=args.lr, seed=seed)
        improve_train(cfg)
        scores[f"r{n}"] = accuracies(out, files, GROUPS[:n + 1])
        if folder != base:
            shutil.rmtree(folder)  # a separate-mode folder holds 7 model-size copies: keep the disk small
        folder = out
    shutil.rmtree(folder)
    return {"method": method["name"], "seed": seed, **scores, "seconds": time.perf_counter() - started}


# -- the report ------------------------------------------------------------------------------------


def cell(values: list[float]) -> str:
    mean, sd = mean_std(values)
    return f"{mean:.3f} ± {sd:.3f}"


def summary(rows: list[dict], bases: list[dict[str, float]]) -> dict[str, dict[str, list[float]]]:
    """Per method, per column: the values over seeds (forgetting of A = base A - A after round 2)."""
    table: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        base = bases[row["seed"]]["A"]
        r1, r2 = row["r1"], row["r2"]
        values = {"A r1": r1["A"], "B r1": r1["B"], "A r2": r2["A"], "B r2": r2["B"], "C r2": r2["C"],
                  "mean r2": statistics.mean(r2.values()), "forgetting A": base - r2["A"],
                  "seconds": row["seconds"]}
        for key, value in values.items():
            table.setdefault(row["method"], {}).setdefault(key, []).append(value)
    return table


COLUMNS = ("A r1", "B r1", "A r2", "B r2", "C r2", "mean r2", "forgetting A")


def main_table(table: dict[str, dict[str, list[float]]]) -> list[str]:
    plain = statistics.mean(table["plain"]["forgetting A"])
    lines = ["| method | A after r1 | B after r1 | A after r2 | B after r2 | C after r2 | mean of A, B, C "
             "after r2 | forgetting of A (r2) | forgetting vs plain | s/run |",
             "|---|" + "---:|" * 9]
    for name, columns in table.items():
        ratio = statistics.mean(columns["forgetting A"]) / plain if plain else float("nan")
        lines.append(f"| {name} | " + " | ".join(cell(columns[c]) for c in COLUMNS)
                     + f" | {ratio:.2f}x | {statistics.mean(columns['seconds']):.0f} |")
    return lines


def sweep_table(table: dict[str, dict[str, list[float]]], lambdas: list[float]) -> list[str]:
    lines = ["| lambda | separate: A r2 | separate: C r2 | separate: mean r2 | online: A r2 | online: C r2 | "
             "online: mean r2 |", "|---:|" + "---:|" * 6]
    for lam in lambdas:
        parts = [cell(table[f"EWC {mode} lambda {lam:g}"][c]) for mode in ("separate", "online")
                 for c in ("A r2", "C r2", "mean r2")]
        lines.append(f"| {lam:g} | " + " | ".join(parts) + " |")
    return lines


def verdict(table: dict[str, dict[str, list[float]]], base_a: float, lambdas: list[float]) -> list[str]:
    """What the numbers say about the claim, in words derived from them."""
    def mean(name: str, column: str) -> float:
        return statistics.mean(table[name][column])

    ewc = [name for name in table if name.startswith("EWC")]
    keeps = max(ewc, key=lambda n: mean(n, "A r2"))
    overall = max(ewc, key=lambda n: mean(n, "mean r2"))
    plain_a, plain_c, plain_f = mean("plain", "A r2"), mean("plain", "C r2"), mean("plain", "forgetting A")
    spread = max(mean_std(table[n]["A r2"])[1] for n in ("plain", keeps))
    beyond = "beyond" if mean(keeps, "A r2") - plain_a > 2 * spread else "not beyond"
    low, high = (f"EWC separate lambda {lam:g}" for lam in (min(lambdas), max(lambdas)))
    prevented = [n for n in ewc if mean(n, "A r2") >= 0.9 * base_a and mean(n, "C r2") >= 0.9 * plain_c]
    return [
        f"- Plain fine-tuning forgets A: accuracy on A falls by {plain_f:.3f} (to {plain_a:.3f}) after "
        "two rounds.",
        f"- The EWC run that keeps most of A is {keeps}: A {mean(keeps, 'A r2'):.3f} vs plain "
        f"{plain_a:.3f} ({beyond} twice the seeds' spread), forgetting "
        f"{mean(keeps, 'forgetting A') / plain_f:.2f}x plain's, at C {mean(keeps, 'C r2'):.3f} vs plain "
        f"{plain_c:.3f}.",
        f"- Raising lambda from {min(lambdas):g} to {max(lambdas):g} (separate) moves A after round 2 from "
        f"{mean(low, 'A r2'):.3f} to {mean(high, 'A r2'):.3f} and C from {mean(low, 'C r2'):.3f} to "
        f"{mean(high, 'C r2'):.3f}: the trade-off Kirkpatrick et al. describe (too small a lambda still "
        "forgets, too large cannot learn the new task).",
        f"- Best EWC by mean accuracy over A, B, C after round 2: {overall} "
        f"({mean(overall, 'mean r2'):.3f}); plain {mean('plain', 'mean r2'):.3f}, replay "
        f"{mean('replay', 'mean r2'):.3f} (replay keeps A at {mean('replay', 'A r2'):.3f}).",
        ("- Verdict: " + (f"EWC prevents forgetting here ({', '.join(prevented)} keeps A within 10% of its "
                          "base accuracy and C within 10% of plain's)." if prevented else
                          "EWC reduces forgetting but does not prevent it here: no lambda keeps A within "
                          "10% of its base accuracy while C stays within 10% of plain fine-tuning's.")),
    ]


def report(rows: list[dict], bases: list[dict[str, float]], args: argparse.Namespace, load: float,
           total_s: float) -> str:
    table = summary(rows, bases)
    base_a = cell([b["A"] for b in bases])
    return "\n".join([
        "# Claim C12: EWC prevents catastrophic forgetting", "",
        "The guide claims that elastic weight consolidation prevents catastrophic forgetting when a model is "
        "trained further on new data. Measured here: class-incremental BANKING77 (77 intents split into "
        "groups A 26, B 26, C 25; one head over all 77), the `tiny` preset pretrained "
        f"{args.pretrain_steps} steps then fine-tuned {args.base_steps} steps on A (lr {args.base_lr}), then "
        f"round 1 on B and round 2 on C through `improve_train`: {args.steps} steps x batch {args.batch}, "
        f"lr {args.lr} each. EWC: penalty (lambda/2) sum F (theta - theta*)^2 (Avalanche's lambda is twice "
        f"ours), per-example empirical Fisher on {args.fisher_samples} sampled rows, online decay "
        f"{args.decay}; replay: {args.replay_ratio:.0%} of each round's examples from earlier groups. "
        f"{'Up to ' + str(args.train) if args.train else 'All'} training rows per group; accuracy on each "
        f"group's BANKING77 test rows (40 per intent, 77-way). Mean ± sd over seeds 0..{args.seeds - 1}.", "",
        f"Base (after A): accuracy on A {base_a}.", "",
        *main_table(table), "",
        "Lambda sweep (after round 2; round 1 is the same for both modes, which differ only in what round 2 "
        "pulls towards):", "",
        *sweep_table(table, args.lambdas), "",
        *verdict(table, mean_std([b["A"] for b in bases])[0], args.lambdas), "",
        f"Total wall time {total_s / 60:.1f} min; foreign CPU load during the run: {load:.0%} of the machine "
        f"({torch.get_num_threads()} threads).",
        f"Command: `.venv/bin/python {' '.join(sys.argv)}`.", ""])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared datasets folder (default: $LMFORGE_DATA or ../shared/data)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--base-steps", type=int, default=400, help="fine-tuning steps on A")
    parser.add_argument("--base-lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=150, help="steps of every incremental round")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak rate of every incremental round")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--train", type=int, default=None, help="at most this many training rows per group")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--decay", type=float, default=0.9, help="online EWC")
    parser.add_argument("--fisher-samples", type=int, default=500)
    parser.add_argument("--replay-ratio", type=float, default=0.3)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 seed, few steps; prints, writes no file")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.pretrain_steps, args.base_steps, args.steps = 1, 20, 30, 10
        args.train, args.fisher_samples, args.lambdas = 300, 32, [1e3, 1e5]
    return args


def main() -> None:
    args = parse_args()
    start, own_start, t0 = machine_jiffies(), time.process_time(), time.perf_counter()
    data = data_dir(args.data)
    rows, bases = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pretrained = pretrained_model(data, root / "pretrain", args.pretrain_steps)
        files = group_files(data, root / "data", args.train)
        intents = [i for group in split_intents(data).values() for i in group]
        for seed in range(args.seeds):
            base = base_model(pretrained, files, intents, root / "runs", seed, args)
            bases.append(accuracies(base, files))
            rows += [incremental(base, files, root / "runs", seed, m, args) for m in methods(args)]
    text = report(rows, bases, args, foreign_load(start, time.process_time() - own_start),
                  time.perf_counter() - t0)
    if not args.quick:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
