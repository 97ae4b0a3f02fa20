"""`make mutate`: mutation testing of the core modules (mutmut 3), then the score per module.

mutmut copies the project to `mutants/`, rewrites every function of the modules named in
`[tool.mutmut] only_mutate` (pyproject.toml) into variants, and runs the tests that reach each
variant; a mutant is killed when a test fails. Re-running continues where it stopped. Read a
surviving mutant with `mutmut show NAME`; docs/testing.md gives each survivor's reason.

    python tests/mutants/mutate.py            # run, then print the table
    python tests/mutants/mutate.py --report   # only print the table of the last run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def scores() -> dict[str, Counter]:
    listing = subprocess.run([BIN / "mutmut", "results", "--all", "true"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout
    per_module: dict[str, Counter] = defaultdict(Counter)
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if "__mutmut_" in name:
            module = name.split(".x_")[0].split(".xǁ")[0]
            per_module[module][status] += 1
    return per_module


def table(per_module: dict[str, Counter]) -> str:
    lines = ["| module | mutants | killed | survived | other | killed % |", "|---|---:|---:|---:|---:|---:|"]
    for module, counts in sorted(per_module.items()):
        total = sum(counts.values())
        killed = counts["killed"] + counts["timeout"]
        other = total - killed - counts["survived"]
        lines.append(f"| `{module}` | {total} | {killed} | {counts['survived']} | {other} | "
                     f"{100 * killed / total:.0f}% |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", action="store_true", help="print the table of the last run only")
    args = parser.parse_args()
    if not args.report:
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "LMFORGE_DATA": os.environ.get("LMFORGE_DATA", str(REPO.parent / "shared" / "data"))}
        subprocess.run([BIN / "mutmut", "run", "--max-children", str(os.cpu_count() or 1)], cwd=REPO, env=env,
                       check=False)
    print(table(scores()))
    survivors = subprocess.run([BIN / "mutmut", "results"], cwd=REPO, capture_output=True, text=True).stdout
    print(f"\nsurviving mutants (mutmut show NAME):\n{survivors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
