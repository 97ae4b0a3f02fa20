"""A/B analysis against independent references: SciPy's Welch test and chi-square, Holm worked by hand,
GrowthBook's published confidence-sequence vectors; and the decisions on constructed experiments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize, stats

from lmforge.improve.abtest import (
    AbTestError,
    MetricSpec,
    VariantData,
    analyze,
    confidence_sequence,
    cs_halfwidth,
    holm,
    plot,
    sequential_rho,
    srm_p_value,
    welch,
)

THUMBS = MetricSpec("thumbs", higher_is_better=True, primary=True)
LATENCY = MetricSpec("latency_ms", higher_is_better=False)
SPECS = [THUMBS, LATENCY]


def users(seed: int, n: int, p_up: float = 0.7, latency_median: float = 300.0, rated: float = 0.7) -> dict:
    """Per-user metrics: a thumbs rating in {-1, +1} (NaN for users who never rated), a log-normal latency."""
    rng = np.random.default_rng(seed)
    thumbs = np.where(rng.random(n) < p_up, 1.0, -1.0)
    thumbs[rng.random(n) >= rated] = np.nan
    return {"thumbs": thumbs, "latency_ms": rng.lognormal(math.log(latency_median), 0.5, n)}


def variant(name: str, seed: int, n: int = 2000, weight: float = 0.5, **kwargs) -> VariantData:
    return VariantData(name, weight, users(seed, n, **kwargs))


@pytest.mark.parametrize("n_a, n_b, scale_b, shift",
                         [(40, 35, 1.0, 0.3), (500, 800, 3.0, 0.1), (2000, 2100, 0.5, 0.0)])
def test_welch_matches_scipy(n_a, n_b, scale_b, shift):
    rng = np.random.default_rng(n_a)
    a, b = rng.normal(0, 1, n_a), rng.normal(shift, scale_b, n_b)
    a[::7] = np.nan  # units without a value are left out, as SciPy's nan_policy="omit" does
    ours = welch(a, b, alpha=0.05)
    ref = stats.ttest_ind(b, a, equal_var=False, nan_policy="omit")
    clean = stats.ttest_ind(b, a[~np.isnan(a)], equal_var=False)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours.dof == pytest.approx(clean.df, rel=1e-9)
    assert ours.diff == pytest.approx(np.nanmean(b) - np.nanmean(a), rel=1e-12)
    assert ours.ci == pytest.approx(tuple(clean.confidence_interval(0.95)), rel=1e-9)
    assert welch(a, b, alpha=0.01).ci == pytest.approx(tuple(clean.confidence_interval(0.99)), rel=1e-9)


def test_per_variant_means_and_intervals_match_scipy():
    analysis = analyze([variant("a", 1), variant("b", 2)], SPECS)
    thumbs = users(1, 2000)["thumbs"]
    values = thumbs[~np.isnan(thumbs)]
    estimate = next(e for e in analysis.estimates if e.variant == "a" and e.metric == "thumbs")
    assert estimate.n == len(values) and estimate.mean == pytest.approx(values.mean())
    ref_ci = stats.t.interval(0.95, len(values) - 1, values.mean(), stats.sem(values))
    assert estimate.ci == pytest.approx(ref_ci)
    comparison = next(c for c in analysis.comparisons if c.metric == "latency_ms")
    ref = stats.ttest_ind(users(2, 2000)["latency_ms"], users(1, 2000)["latency_ms"], equal_var=False)
    assert comparison.p == pytest.approx(ref.pvalue, rel=1e-9)


def test_holm_worked_by_hand():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised to 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; an untested comparison (NaN) is not in the family: 0.4 x 2 = 0.8, 0.7 x 1 -> 0.8
    adjusted = holm([0.7, math.nan, 0.4])
    assert adjusted[0] == pytest.approx(0.8) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.8)
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])


def _shift_for_p(a: np.ndarray, b: np.ndarray, target: float) -> float:
    return optimize.brentq(lambda d: stats.ttest_ind(b + d, a, equal_var=False).pvalue - target, 0.0, 1.0)


def test_holm_correction_decides():
    """A primary metric at p = 0.03 wins alone, but not beside one guardrail: Holm's p is 2 x 0.03."""
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 300), rng.normal(0, 1, 300)
    b = b + _shift_for_p(a, b, 0.03)
    same = rng.normal(0, 1, 300)
    control = VariantData("a", 0.5, {"q": a, "g": same})
    treatment = VariantData("b", 0.5, {"q": b, "g": same.copy()})
    alone = analyze([control, treatment], [MetricSpec("q", primary=True)])
    assert alone.comparisons[0].p == pytest.approx(0.03) and alone.decision == "promote b"
    both = analyze([control, treatment], [MetricSpec("q", primary=True), MetricSpec("g")])
    assert both.comparisons[0].p_adjusted == pytest.approx(0.06) and both.decision == "inconclusive"


def test_srm_matches_scipy_and_blocks_the_verdict():
    ref = stats.chisquare([1000, 1100]).pvalue
    assert srm_p_value([1000, 1100], [0.5, 0.5]) == pytest.approx(ref, rel=1e-9)
    ref = stats.chisquare([230, 270, 500], [1000 * 0.2, 1000 * 0.3, 1000 * 0.5]).pvalue
    assert srm_p_value([230, 270, 500], [0.2, 0.3, 0.5]) == pytest.approx(ref, rel=1e-9)
    winner = {"p_up": 0.9}
    fine = analyze([variant("a", 1, 1000), variant("b", 2, 1080, **winner)], SPECS)
    assert fine.srm_p > 0.001 and fine.decision == "promote b"
    broken = analyze([variant("a", 1, 1000), variant("b", 2, 1200, **winner)], SPECS)
    assert broken.srm_p == pytest.approx(stats.chisquare([1000, 1200]).pvalue)
    assert broken.decision == "blocked (sample ratio mismatch)"
    weighted = analyze([variant("a", 1, 1000, weight=0.2), variant("b", 2, 4000, weight=0.8, **winner)],
                       SPECS)
    assert weighted.decision == "promote b"


@pytest.mark.parametrize("se, n, tuning, ci", [
    (0.33341, 6461, 1000, (-0.55844, 1.56516)),  # TestSequentialTTest.test_sequential_test_runs
    (0.03386, 6461, 5000, (0.40098, 0.60675)),   # ... test_sequential_test_runs_prop
])
def test_confidence_sequence_matches_growthbook(se, n, tuning, ci):
    """Half-widths from GrowthBook's own tests (packages/stats/tests/frequentist/test_tests.py, same
    commit as the assignment vectors): GrowthBook's s2 = SE^2 * n over both arms, rho from alpha 0.05."""
    half = cs_halfwidth(se**2 * n, n, 0.05, sequential_rho(0.05, tuning))
    assert half == pytest.approx((ci[1] - ci[0]) / 2, rel=2e-4)


def test_rho_by_hand():
    # -2 ln 0.05 = 5.99146; ln(6.99146) = 1.94470; (5.99146 + 1.94470) / 5000 = 0.00158723
    assert sequential_rho(0.05) == pytest.approx(math.sqrt(0.00158723), rel=1e-5)


@pytest.mark.parametrize("n", [60, 500, 5000, 50_000])
def test_confidence_sequence_is_wider_than_the_fixed_interval(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(0, 1, n), rng.normal(0.05, 1, n)
    fixed, sequence = welch(a, b, 0.05), confidence_sequence(a, b, 0.05)
    assert sequence.diff == fixed.diff
    assert sequence.ci[0] < fixed.ci[0] and sequence.ci[1] > fixed.ci[1]
    assert sequence.p >= fixed.p


def test_sequential_p_is_where_the_sequence_excludes_zero():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 1000), rng.normal(0, 1, 1000)
    for shift in np.linspace(0.0, 0.3, 31):
        result = confidence_sequence(a, b + shift, 0.05)
        assert (result.p < 0.05) == (result.ci[0] > 0 or result.ci[1] < 0)


def test_peeking_a_sequence_keeps_its_coverage():
    """A/A, 300 experiments looked at 10 times each: stopping at the first look whose 95% sequence
    excludes 0 is wrong at most 5% of the time; the fixed interval read the same way is wrong far
    more often (about 19% in theory; the benchmark measures it on 2000 experiments)."""
    rng = np.random.default_rng(11)
    wrong_sequence = wrong_fixed = 0
    for _ in range(300):
        a, b = rng.normal(0, 1, 1000), rng.normal(0, 1, 1000)
        looks = range(100, 1001, 100)
        wrong_sequence += any(confidence_sequence(a[:k], b[:k], 0.05).p < 0.05 for k in looks)
        wrong_fixed += any(welch(a[:k], b[:k], 0.05).p < 0.05 for k in looks)
    assert wrong_sequence / 300 <= 0.05 < 0.10 < wrong_fixed / 300


def test_sequential_analysis_widens_every_interval():
    fixed = analyze([variant("a", 1), variant("b", 2)], SPECS)
    sequential = analyze([variant("a", 1), variant("b", 2)], SPECS, sequential=True)
    for f, s in zip(fixed.estimates + fixed.comparisons, sequential.estimates + sequential.comparisons,
                    strict=True):
        assert s.ci[0] < f.ci[0] and s.ci[1] > f.ci[1]


@pytest.mark.parametrize("treatment, decision", [
    ({"p_up": 0.8}, "promote b"),
    ({"p_up": 0.8, "latency_median": 400.0}, "keep a"),  # better answers, but a guardrail is worse
    ({"p_up": 0.6}, "keep a"),
    ({}, "inconclusive"),
])
@pytest.mark.parametrize("sequential", [False, True])
def test_decisions_on_constructed_experiments(treatment, decision, sequential):
    analysis = analyze([variant("a", 1), variant("b", 2, **treatment)], SPECS, sequential=sequential)
    assert analysis.decision == decision, analysis.reason


def test_lower_is_better_primary_metric():
    specs = [MetricSpec("latency_ms", higher_is_better=False, primary=True), MetricSpec("thumbs")]
    assert analyze([variant("a", 1), variant("b", 2, latency_median=250.0)], specs).decision == "promote b"
    assert analyze([variant("a", 1), variant("b", 2, latency_median=350.0)], specs).decision == "keep a"


def test_several_treatments():
    best = analyze([variant("a", 1, weight=1 / 3), variant("b", 2, weight=1 / 3, p_up=0.78),
                    variant("c", 3, weight=1 / 3, p_up=0.85)], SPECS)
    assert best.decision == "promote c"
    assert len(best.comparisons) == 4
    mixed = analyze([variant("a", 1, weight=1 / 3), variant("b", 2, weight=1 / 3, p_up=0.55),
                     variant("c", 3, weight=1 / 3)], SPECS)
    assert mixed.decision == "inconclusive" and "b is significantly worse on thumbs" in mixed.reason


def test_too_few_units_is_inconclusive_however_large_the_effect():
    small = analyze([variant("a", 1, 40, p_up=0.1), variant("b", 2, 40, p_up=0.95)], SPECS)
    assert small.decision == "inconclusive (too few units)"
    assert small.comparisons[0].significant  # the test itself is clear; too few units to trust it
    assert analyze([variant("a", 1, 40, p_up=0.1), variant("b", 2, 40, p_up=0.95)], SPECS,
                   min_units=20).decision == "promote b"


def test_a_variant_without_units_is_an_error_naming_it():
    with pytest.raises(AbTestError, match="variant b has no units"):
        analyze([variant("a", 1), variant("b", 2, 0)], SPECS)


@pytest.mark.parametrize("specs, message", [
    ([MetricSpec("thumbs"), LATENCY], "exactly one primary"),
    ([THUMBS, MetricSpec("missing")], "no values for metric"),
])
def test_bad_input_is_an_error(specs, message):
    with pytest.raises(AbTestError, match=message):
        analyze([variant("a", 1), variant("b", 2)], specs)


def test_json_table_and_plot(tmp_path):
    analysis = analyze([variant("a", 1), variant("b", 2, p_up=0.8)], SPECS)
    exported = json.loads(json.dumps(analysis.to_dict(), allow_nan=False))
    assert exported["decision"] == "promote b" and exported["units"] == {"a": 2000, "b": 2000}
    constant = [VariantData(name, 0.5, {"x": np.ones(50)}) for name in "ab"]
    untestable = analyze(constant, [MetricSpec("x", primary=True)])
    untested = json.loads(json.dumps(untestable.to_dict(), allow_nan=False))["comparisons"][0]
    assert untested["p"] is None and untested["outcome"] == "not testable"
    table = analysis.table()
    assert "**Decision: promote b.**" in table
    assert "| thumbs | b - a |" in table and "| latency_ms | a | 2000 |" in table
    plot(analysis, tmp_path / "abtest.png")
    assert (tmp_path / "abtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(AbTestError, match="abtest.xyz"):
        plot(analysis, tmp_path / "abtest.xyz")
    assert not (tmp_path / "abtest.xyz").exists()
