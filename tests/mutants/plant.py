"""Re-plant the bugs each correctness test exists for, and check that the test catches them.

Every entry of a `planted_<area>.py` file beside this one names a source file, an exact snippet,
its buggy replacement and the tests that must fail with it. For each entry the runner copies the
repository to a temporary folder, plants the bug there (the working tree is never touched, so it
is safe while you edit), and runs the named tests against the copy (`PYTHONPATH` points at the
copy's `src/`, which subprocesses and torchrun workers inherit):

    python tests/mutants/plant.py                 # every planted bug
    python tests/mutants/plant.py --area train    # the entries of planted_train.py
    python tests/mutants/plant.py --name grads-x2 # one entry
    python tests/mutants/plant.py --list

A bug is CAUGHT when pytest reports failing tests, SURVIVED when the tests pass, ERROR when the
snippet is not found exactly once or pytest could not run (collection error, no tests). The exit
status is 0 only when every bug was caught.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COPIED = ("src", "tests", "configs", "pyproject.toml", "README.md")


@dataclass(frozen=True)
class Planted:
    """One deliberate bug: replace `find` (exactly once in `file`) by `replace`; `tests` must fail."""

    name: str
    claim: str
    file: str
    find: str
    replace: str
    tests: list[str] = field(default_factory=list)


def load_entries(area: str | None) -> list[tuple[str, Planted]]:
    sys.path.insert(0, str(Path(__file__).parent))  # the entry files import `Planted` from here
    entries = []
    for path in sorted(Path(__file__).parent.glob("planted_*.py")):
        this_area = path.stem.removeprefix("planted_")
        if area and this_area != area:
            continue
        spec = importlib.util.spec_from_file_location(f"planted_{this_area}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        entries += [(this_area, entry) for entry in module.PLANTED]
    return entries


def plant(entry: Planted, root: Path) -> str | None:
    """Write the bug into the copy at `root`; return why it could not be planted, or None."""
    target = root / entry.file
    text = target.read_text()
    count = text.count(entry.find)
    if count != 1:
        return f"snippet found {count} times in {entry.file} (expected exactly once)"
    target.write_text(text.replace(entry.find, entry.replace))
    return None


def check(entry: Planted, data: Path) -> tuple[str, str]:
    """(verdict, detail) for one planted bug."""
    with tempfile.TemporaryDirectory(prefix=f"planted-{entry.name}-") as tmp:
        root = Path(tmp)
        for name in COPIED:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif source.exists():
                shutil.copy2(source, root / name)
        problem = plant(entry, root)
        if problem:
            return "ERROR", problem
        env = {**os.environ, "PYTHONPATH": str(root / "src"), "LMFORGE_DATA": str(data),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--no-header",
                   *entry.tests]
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or [""]
        verdict = {0: "SURVIVED", 1: "CAUGHT"}.get(result.returncode, "ERROR")
        return verdict, tail[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--area", help="only the entries of planted_<AREA>.py")
    parser.add_argument("--name", help="only the entry with this name")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("LMFORGE_DATA", REPO.parent / "shared" / "data")),
                        help="the shared datasets folder (default: ../shared/data or $LMFORGE_DATA)")
    args = parser.parse_args()
    entries = [(a, e) for a, e in load_entries(args.area) if not args.name or e.name == args.name]
    if not entries:
        print("no planted bug matches", file=sys.stderr)
        return 1
    if args.list:
        for area, entry in entries:
            print(f"{area:10} {entry.name:32} {entry.claim}")
        return 0
    caught = 0
    for area, entry in entries:
        started = time.perf_counter()
        verdict, detail = check(entry, args.data.resolve())
        caught += verdict == "CAUGHT"
        print(f"{verdict:8} {area:10} {entry.name:32} {time.perf_counter() - started:6.0f}s  {detail}",
              flush=True)
    print(f"{caught} of {len(entries)} planted bugs caught")
    return 0 if caught == len(entries) else 1


if __name__ == "__main__":
    sys.exit(main())
