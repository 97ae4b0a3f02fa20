"""Language-ID speed and accuracy of every backend in lmforge.data.curate.langid, on Tatoeba sentences.

    python benchmarks/langid.py [--data DIR] [--per-lang N]

Reads `langid_tatoeba/langid_tatoeba_21lang.tsv` (21 languages x 1,000 short sentences) from
--data, else $LMFORGE_DATA, else ../shared/data. Each detector runs over all sentences in one
process after a warm-up call (model and profile loading excluded), exactly as the `language`
step calls it. Reports sentences/s, accuracy, per-language accuracy inside the confusable groups
(es/pt/it, ru/uk, zh/ja) with the main confusions, and the throughput ratio against the issue's
aim (fast backend >= 30x langdetect at equal or better accuracy).
Writes benchmarks/results/langid.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

from lmforge.data.curate.langid import DETECTORS, load_detector

RESULTS = Path(__file__).parent / "results"
DATA_FILE = Path("langid_tatoeba") / "langid_tatoeba_21lang.tsv"
GROUPS = (("es", "pt", "it"), ("ru", "uk"), ("zh", "ja"))
FAST, SLOW = "fasttext", "langdetect"


def data_dir(arg: str | None) -> Path:
    """--data, else $LMFORGE_DATA, else the shared folder beside the repository."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(arg or os.environ.get("LMFORGE_DATA") or default)


def load_sentences(path: Path, per_lang: int | None) -> list[tuple[str, str]]:
    """(gold ISO 639-1 code, sentence), the first `per_lang` of each language when given."""
    seen: Counter[str] = Counter()
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            lang = row["lang_iso639_1"]
            seen[lang] += 1
            if per_lang is None or seen[lang] <= per_lang:
                rows.append((lang, row["text"]))
    return rows


def run(name: str, texts: list[str]) -> tuple[list[str], float]:
    """Predicted codes and sentences/s of one backend."""
    detector = load_detector(name)
    detector.detect("warm-up sentence")
    start = time.perf_counter()
    predicted = [detector.detect(text)[0] for text in texts]
    return predicted, len(texts) / (time.perf_counter() - start)


def accuracy(gold: list[str], predicted: list[str]) -> float:
    return sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)


def by_language(gold: list[str], predicted: list[str]) -> dict[str, tuple[float, Counter[str]]]:
    """Accuracy per gold language and the wrong answers given for it."""
    hits: Counter[str] = Counter()
    wrong: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for g, p in zip(gold, predicted, strict=True):
        hits[g] += g == p
        if g != p:
            wrong[g][p] += 1
    totals = Counter(gold)
    return {lang: (hits[lang] / totals[lang], wrong[lang]) for lang in totals}


def render(n: int, results: dict[str, tuple[list[str], float]], gold: list[str]) -> str:
    """The Markdown report: overall table, confusable groups, ratio against the aim."""
    lines = ["# Language identification: speed and accuracy", "",
             f"Tatoeba (LASER test sentences), {n:,} sentences in {len(set(gold))} languages; one process "
             f"on a {os.cpu_count()}-thread machine, model/profile loading excluded; the step's own "
             "code path (`lmforge.data.curate.langid.load_detector(name).detect`).", "",
             "| backend | what it is | sentences/s | accuracy |", "|---|---|---:|---:|"]
    lines += [f"| {name} | {_summary(name)} | {speed:,.0f} | {accuracy(gold, pred):.2%} |"
              for name, (pred, speed) in results.items()]
    lines += ["", "## Confusable groups (accuracy per language; main wrong answers)", "",
              "| language | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    per = {name: by_language(gold, pred) for name, (pred, _) in results.items()}
    for group in GROUPS:
        for lang in group:
            cells = [f"{per[name][lang][0]:.1%} ({_top(per[name][lang][1])})" for name in results]
            lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    if FAST in results and SLOW in results:
        ratio = results[FAST][1] / results[SLOW][1]
        gain = accuracy(gold, results[FAST][0]) - accuracy(gold, results[SLOW][0])
        verdict = "met" if ratio >= 30 and gain >= 0 else "not met"
        lines += ["", f"Throughput {FAST} / {SLOW}: **{ratio:.0f}x**, accuracy difference {gain:+.2%} "
                  f"(issue 3 aim: >= 30x at equal or better accuracy: {verdict})."]
    return "\n".join(lines) + "\n"


def _summary(name: str) -> str:
    """First line of the backend's docstring."""
    return (getattr(DETECTORS[name], "__doc__", None) or name).strip().splitlines()[0]


def _top(wrong: Counter[str]) -> str:
    return ", ".join(f"{lang} {count}" for lang, count in wrong.most_common(3)) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared data folder (default: $LMFORGE_DATA or ../shared/data)")
    parser.add_argument("--per-lang", type=int, help="only the first N sentences of each language")
    args = parser.parse_args()
    rows = load_sentences(data_dir(args.data) / DATA_FILE, args.per_lang)
    gold, texts = [lang for lang, _ in rows], [text for _, text in rows]
    results = {}
    for name in DETECTORS:
        results[name] = run(name, texts)
        print(f"{name}: {results[name][1]:,.0f} sentences/s, accuracy {accuracy(gold, results[name][0]):.2%}")
    report = render(len(rows), results, gold)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "langid.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
