"""A/B assignment: bucket-for-bucket GrowthBook's, shares that follow the weights, and the same variant
for a user in every process.

growthbook_cases.json holds GrowthBook's published SDK conformance vectors, copied as data from
github.com/growthbook/growthbook, packages/sdk-js/test/cases.json at commit
8f1db4456915a8e7b7faf23d5632ca7219d2f469 (spec version 0.8.0, MIT): every `hash`, `getBucketRange`
and `chooseVariation` case, and the `run` cases that exercise hash version 2 with nothing else.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from processes import run_bounded
from scipy import stats

from lmforge.serve.assignment import (
    AssignmentError,
    assign,
    bucket_ranges,
    check_weights,
    choose_variation,
    fnv32a,
    gb_hash,
)

CASES = json.loads((Path(__file__).parent / "growthbook_cases.json").read_text(encoding="utf-8"))
IDS = [f"user-{i}" for i in range(20_000)]


@pytest.mark.parametrize("case", CASES["hash"], ids=lambda c: f"{c[0]}|{c[1]}|v{c[2]}")
def test_hash_matches_growthbook(case):
    seed, value, version, expected = case
    assert gb_hash(seed, value, version) == expected


@pytest.mark.parametrize("case", CASES["getBucketRange"], ids=lambda c: c[0])
def test_bucket_ranges_match_growthbook(case):
    _, (n, coverage, weights), expected = case
    ranges = bucket_ranges(n, coverage, weights)
    assert len(ranges) == len(expected)
    for got, want in zip(ranges, expected, strict=True):
        assert got == pytest.approx(tuple(want), abs=1e-12)


@pytest.mark.parametrize("case", CASES["chooseVariation"], ids=lambda c: c[0])
def test_choose_variation_matches_growthbook(case):
    _, n, ranges, expected = case
    assert choose_variation(n, ranges) == expected


@pytest.mark.parametrize("case", CASES["run"], ids=lambda c: c[0])
def test_assign_matches_growthbook_run(case):
    _, context, experiment, expected_value, in_experiment, _ = case
    n = len(experiment["variations"])
    variant = assign(experiment["key"], context["attributes"]["id"], experiment.get("weights", [1 / n] * n),
                     experiment.get("coverage", 1.0), seed=experiment.get("seed"))
    assert in_experiment and experiment["variations"][variant] == expected_value


def _fnv_over(code_units: list[int]) -> int:
    h = 2166136261
    for unit in code_units:
        h = ((h ^ unit) * 16777619) % 2**32
    return h


@pytest.mark.parametrize("text, code_units", [
    ("é", [0xE9]),                      # UTF-8 would be two bytes, C3 A9
    ("😀", [0xD83D, 0xDE00]),            # one code point, two UTF-16 code units (a surrogate pair)
    ("a\u4e2d", [0x61, 0x4E2D]),
])
def test_fnv_runs_over_utf16_code_units_like_javascript(text, code_units):
    """The published vectors are all ASCII, where UTF-8 and UTF-16 agree; JavaScript's charCodeAt
    gives these code units."""
    assert fnv32a(text) == _fnv_over(code_units)


def _chi_square(counts: list[int], weights: list[float]) -> float:
    total = sum(counts)
    return sum((c - total * w) ** 2 / (total * w) for c, w in zip(counts, weights, strict=True))


def test_shares_follow_the_weights():
    """20 000 ids at 20/80: the share's chi-square stays under the 0.999 quantile (1 dof), and a
    mis-weighted split (50/50, or the weights reversed) would be far above it."""
    counts = [0, 0]
    for user in IDS:
        counts[assign("exp-shares", user, [0.2, 0.8])] += 1
    assert _chi_square(counts, [0.2, 0.8]) < stats.chi2.ppf(0.999, df=1)


def test_coverage_excludes_users_without_moving_the_others():
    full = {u: assign("exp-cover", u, [0.5, 0.5]) for u in IDS[:4000]}
    half = {u: assign("exp-cover", u, [0.5, 0.5], coverage=0.5) for u in IDS[:4000]}
    included = [u for u in half if half[u] is not None]
    assert _chi_square([len(included), 4000 - len(included)], [0.5, 0.5]) < stats.chi2.ppf(0.999, df=1)
    assert all(half[u] == full[u] for u in included)
    assert all(v is not None for v in full.values())


def test_no_user_id_is_not_in_the_experiment():
    assert assign("exp", "", [0.5, 0.5]) is None


def test_seed_defaults_to_the_key_and_a_new_seed_reshuffles():
    ids = IDS[:2000]
    by_key = [assign("exp-seed", u, [0.5, 0.5]) for u in ids]
    assert by_key == [assign("other-key", u, [0.5, 0.5], seed="exp-seed") for u in ids]
    assert by_key == [assign("exp-seed", u, [0.5, 0.5], seed="") for u in ids]
    reseeded = [assign("exp-seed", u, [0.5, 0.5], seed="exp-seed-2") for u in ids]
    same = sum(a == b for a, b in zip(by_key, reseeded, strict=True))
    assert 900 < same < 1100  # independent halves agree about half the time


SCRIPT = """
import json, sys
from lmforge.serve.assignment import assign
ids = json.loads(open(sys.argv[1], encoding="utf-8").read())
print(json.dumps([assign("exp-sticky", u, [0.1, 0.3, 0.6], 0.9, "s1") for u in ids]))
"""


def test_assignment_is_the_same_in_another_process(tmp_path):
    """A fresh interpreter with another string-hash seed assigns every user the same variant: nothing
    depends on process state (Python's `hash()` would)."""
    ids = IDS[:500] + ["ünïcode-😀", "x" * 300]
    here = [assign("exp-sticky", u, [0.1, 0.3, 0.6], 0.9, "s1") for u in ids]
    (tmp_path / "ids.json").write_text(json.dumps(ids), encoding="utf-8")
    result = run_bounded([sys.executable, "-c", SCRIPT, str(tmp_path / "ids.json")], timeout=60, check=True,
                         capture_output=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert json.loads(result.stdout) == here
    assert {0, 1, 2, None} == set(here)


@pytest.mark.parametrize("weights, coverage, message", [
    ([0.5, 0.4], 1.0, "sum to 0.9"),
    ([1.0], 1.0, "at least two"),
    ([1.2, -0.2], 1.0, "in [0, 1]"),
    ([0.5, 0.5], 1.5, "coverage 1.5"),
])
def test_check_weights_refuses_what_growthbook_would_silently_replace(weights, coverage, message):
    with pytest.raises(AssignmentError, match=re.escape(message)):
        check_weights(weights, coverage)
    check_weights([0.2, 0.8], 0.5)
