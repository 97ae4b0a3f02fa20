"""A/B test analysis: did a variant beat the control, by how much, and may we act on it.

The input is one value per unit (user) per metric, the unit being what assignment randomises
(`lmforge.serve.assignment` hashes user ids): a user's requests are correlated, so a test over
requests instead of users would be overconfident. NaN marks a unit with no value for a metric (a
user who never rated an answer).

The statistics are GrowthBook's frequentist engine, on absolute differences of means:

- each treatment against the control (variant 0), per metric, by Welch's t-test (unequal
  variances, Welch-Satterthwaite degrees of freedom), read once at a horizon fixed in advance;
- or, in sequential mode, by the asymptotic confidence sequence of Waudby-Smith et al. (arXiv
  2103.06476, eq. 9) with GrowthBook's tuning (tightest at 5000 units): valid however often it is
  looked at. Its p-value (eq. 155 form) is the smallest alpha at which the sequence excludes 0, so
  "Holm-adjusted p < alpha" is "the sequence at Holm's level excludes 0". Reading a fixed-horizon
  test repeatedly and stopping at the first p < 0.05 is what this mode exists to replace
  (benchmarks/abtest_power.py measures how far that inflates false positives);
- Holm's correction over every (treatment, metric) comparison, so the chance of any false
  "significant" stays at alpha however many guardrails are watched;
- a sample-ratio-mismatch check (chi-square of units per variant against the weights): at
  p < 0.001 (GrowthBook's threshold) assignment or logging is broken, and no metric is trusted.

The decision: promote the treatment whose primary metric is significantly better with no metric
significantly worse; keep the control when every treatment is significantly worse on the primary
or on a guardrail; otherwise inconclusive.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import special

from lmforge.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text
from lmforge.errors import LmforgeError

SRM_THRESHOLD = 0.001
SEQUENTIAL_TUNING = 5000
"""GrowthBook's default: the sample size (both arms together) at which the sequence is tightest."""
MIN_UNITS = 30
"""Below this many units with a primary-metric value in some variant the decision is inconclusive:
Welch's t and the asymptotic sequence both lean on the mean being roughly normal, and with fewer
units a skewed metric (log-normal latency, a rating most users give the same way) makes their p-values
wrong. 30 is the usual floor for that approximation; GrowthBook waits for 150 before showing results."""


class AbTestError(LmforgeError):
    """Analysis input the user can fix: a variant without units, a metric missing, no primary metric."""


@dataclass(frozen=True)
class VariantData:
    """One variant: its share of traffic and, per metric, one value per unit (NaN: no value)."""

    name: str
    weight: float
    metrics: dict[str, np.ndarray]


@dataclass(frozen=True)
class MetricSpec:
    """A metric to compare; exactly one is primary (it decides promotion), the others are guardrails
    (any of them significantly worse keeps the control)."""

    name: str
    higher_is_better: bool = True
    primary: bool = False


@dataclass(frozen=True)
class Estimate:
    """A metric's mean in one variant over its `n` units with a value."""

    metric: str
    variant: str
    n: int
    mean: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class Comparison:
    """Treatment minus control for one metric; `outcome` is better / worse / no significant difference /
    not testable (fewer than two values in an arm, or no variance in either)."""

    metric: str
    treatment: str
    diff: float
    ci: tuple[float, float]
    p: float
    dof: float
    p_adjusted: float
    significant: bool
    outcome: str


class _Test(NamedTuple):
    diff: float
    ci: tuple[float, float]
    p: float
    dof: float


_NAN_TEST = _Test(math.nan, (math.nan, math.nan), math.nan, math.nan)
"""Fewer than two values in an arm, or no variance in either: nothing to test."""


def _finite(values: np.ndarray) -> np.ndarray:
    return values[~np.isnan(values)]


class _Difference(NamedTuple):
    diff: float
    se2: float
    dof: float
    n: int


def _difference(control: np.ndarray, treatment: np.ndarray) -> _Difference | None:
    """mean(treatment) - mean(control), its squared standard error (unequal variances), the
    Welch-Satterthwaite degrees of freedom and the units in both arms; None when there is nothing
    to test (fewer than two values in an arm, or no variance in either)."""
    a, b = _finite(control), _finite(treatment)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return None
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return _Difference(float(b.mean() - a.mean()), float(va + vb), float(dof), len(a) + len(b))


def welch(control: np.ndarray, treatment: np.ndarray, alpha: float) -> _Test:
    """Welch's t-test of mean(treatment) - mean(control): two-sided p and the (1 - alpha) interval."""
    d = _difference(control, treatment)
    if d is None:
        return _NAN_TEST
    se = math.sqrt(d.se2)
    half = float(special.stdtrit(d.dof, 1 - alpha / 2)) * se
    p = float(2 * special.stdtr(d.dof, -abs(d.diff) / se))
    return _Test(d.diff, (d.diff - half, d.diff + half), p, d.dof)


def sequential_rho(alpha: float, tuning: float = SEQUENTIAL_TUNING) -> float:
    """The sequence's rho for a two-sided test (arXiv 2103.06476 eq. 161, as GrowthBook computes it)."""
    log_term = -2 * math.log(alpha)
    return math.sqrt((log_term + math.log(log_term + 1)) / tuning)


def cs_halfwidth(variance: float, n: int, alpha: float, rho: float) -> float:
    """Half-width of the asymptotic confidence sequence for a mean of `n` values of this variance
    (eq. 9); for a difference, GrowthBook's convention: n = both arms, variance = n * SE^2."""
    nr2 = n * rho**2
    return math.sqrt(variance * 2 * (nr2 + 1) * math.log(math.sqrt(nr2 + 1) / alpha) / (n * nr2))


def confidence_sequence(control: np.ndarray, treatment: np.ndarray, alpha: float) -> _Test:
    """The always-valid counterpart of `welch`: the (1 - alpha) confidence sequence of the difference and
    the always-valid p-value (1 / the e-value, at most 1), with rho tuned at `alpha`: a Holm-adjusted
    level keeps that rho, which only sets where the sequence is tightest."""
    d = _difference(control, treatment)
    if d is None:
        return _NAN_TEST
    rho = sequential_rho(alpha)
    half = cs_halfwidth(d.se2 * d.n, d.n, alpha, rho)
    nr2 = d.n * rho**2 + 1
    log_evalue = d.n * rho**2 * d.diff**2 / d.se2 / (2 * nr2) - 0.5 * math.log(nr2)
    return _Test(d.diff, (d.diff - half, d.diff + half), min(1.0, math.exp(-log_evalue)), d.dof)


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down Bonferroni), each capped at 1; NaN (untested) stays NaN and
    does not count in the family."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def srm_p_value(units: list[int], weights: list[float]) -> float:
    """Chi-square goodness of fit of units per variant against the configured weights (scipy.special's
    distribution functions directly: scipy.stats's wrappers cost milliseconds, and the power benchmark
    runs this analysis tens of thousands of times)."""
    total, weight_sum = sum(units), sum(weights)
    expected = [total * w / weight_sum for w in weights]
    statistic = sum((n - e) ** 2 / e for n, e in zip(units, expected, strict=True))
    return float(special.chdtrc(len(units) - 1, statistic))


@dataclass(frozen=True)
class Analysis:
    """Everything `analyze` found; `to_dict` for JSON, `table` for a Markdown report."""

    alpha: float
    sequential: bool
    min_units: int
    metrics: list[MetricSpec]
    weights: dict[str, float]
    units: dict[str, int]
    estimates: list[Estimate]
    comparisons: list[Comparison]
    srm_p: float
    decision: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; NaN (nothing to test) becomes null."""
        return _json_safe(asdict(self))

    def table(self) -> str:
        level = f"{1 - self.alpha:.0%} {'CS' if self.sequential else 'CI'}"
        mode = ("sequential (always-valid confidence sequences, may be read at any time)" if self.sequential
                else "fixed horizon (Welch t-test, read once)")
        counts = ", ".join(f"{name} {n} (weight {self.weights[name]:g})" for name, n in self.units.items())
        lines = [f"**Decision: {self.decision}.** {self.reason}.", "",
                 f"Mode: {mode}; alpha {self.alpha:g}, Holm-corrected over {len(self.comparisons)} "
                 f"comparisons. Units: {counts}; sample-ratio-mismatch p = {_num(self.srm_p)} (blocks below "
                 f"{SRM_THRESHOLD:g}).", "",
                 f"| metric | variant | units with a value | mean | {level} |", "|---|---|---|---|---|"]
        lines += [f"| {e.metric} | {e.variant} | {e.n} | {_num(e.mean)} | {_interval(e.ci)} |"
                  for e in self.estimates]
        lines += ["", f"| metric | treatment - control | difference | {level} | p | Holm p | outcome |",
                  "|---|---|---|---|---|---|---|"]
        control = next(iter(self.units))
        lines += [f"| {c.metric} | {c.treatment} - {control} | {_num(c.diff)} | {_interval(c.ci)} "
                  f"| {_num(c.p)} | {_num(c.p_adjusted)} | {c.outcome} |" for c in self.comparisons]
        return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.4g}"


def _interval(ci: tuple[float, float]) -> str:
    return f"[{_num(ci[0])}, {_num(ci[1])}]"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {key: _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(value) for value in obj]
    return obj


def _arrays(variants: list[VariantData], specs: list[MetricSpec]) -> dict[str, dict[str, np.ndarray]]:
    """Each variant's metric values as 1-D float arrays, after checking everything `analyze` relies on."""
    if len(variants) < 2:
        raise AbTestError(f"{len(variants)} variant(s): expected a control and at least one treatment")
    names, metrics = [v.name for v in variants], [s.name for s in specs]
    if len(set(names)) != len(names) or len(set(metrics)) != len(metrics):
        raise AbTestError(f"variants {names}, metrics {metrics}: expected each name once")
    if sum(s.primary for s in specs) != 1:
        raise AbTestError(f"metrics {metrics}: expected exactly one primary metric, "
                          f"got {sum(s.primary for s in specs)}")
    data = {}
    for variant in variants:
        if not (math.isfinite(variant.weight) and variant.weight > 0):
            raise AbTestError(f"variant {variant.name}: weight {variant.weight}: expected a positive share")
        missing = [m for m in metrics if m not in variant.metrics]
        if missing:
            raise AbTestError(f"variant {variant.name}: no values for metric(s) {missing}")
        arrays = {m: np.asarray(variant.metrics[m], dtype=float) for m in metrics}
        shapes = {m: a.shape for m, a in arrays.items()}
        if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
            raise AbTestError(f"variant {variant.name}: metric shapes {shapes}: expected one value per unit, "
                              "the same units for every metric")
        if any(np.isinf(a).any() for a in arrays.values()):
            raise AbTestError(f"variant {variant.name}: infinite metric values (NaN marks a missing value)")
        if len(arrays[metrics[0]]) == 0:
            raise AbTestError(f"variant {variant.name} has no units: is the server assigning it, and does "
                              "the log record its name?")
        data[variant.name] = arrays
    return data


def _estimate(metric: str, variant: str, values: np.ndarray, alpha: float, sequential: bool) -> Estimate:
    x = _finite(values)
    if len(x) < 2:
        mean = float(x.mean()) if len(x) else math.nan
        return Estimate(metric, variant, len(x), mean, (math.nan, math.nan))
    mean, variance = float(x.mean()), float(x.var(ddof=1))
    if sequential:
        half = cs_halfwidth(variance, len(x), alpha, sequential_rho(alpha))
    else:
        half = float(special.stdtrit(len(x) - 1, 1 - alpha / 2)) * math.sqrt(variance / len(x))
    return Estimate(metric, variant, len(x), mean, (mean - half, mean + half))


def _comparison(spec: MetricSpec, treatment: str, test: _Test, p_adjusted: float, alpha: float) -> Comparison:
    significant = p_adjusted < alpha
    outcome = "not testable" if math.isnan(test.p) else "no significant difference"
    if significant:
        outcome = "better" if (test.diff > 0) == spec.higher_is_better else "worse"
    return Comparison(spec.name, treatment, test.diff, test.ci, test.p, test.dof, p_adjusted, significant,
                      outcome)


def _decide(srm_p: float, estimates: list[Estimate], comparisons: list[Comparison], primary: MetricSpec,
            control: str, min_units: int) -> tuple[str, str]:
    """The decision and the one-line reason for it, in the order that makes each step trustworthy:
    assignment first, then enough units, then the comparisons."""
    if srm_p < SRM_THRESHOLD:
        return ("blocked (sample ratio mismatch)", f"units per variant do not follow the weights (SRM p = "
                f"{srm_p:.2g} < {SRM_THRESHOLD:g}): fix assignment or logging before reading any metric")
    few = [f"{e.variant} {e.n}" for e in estimates if e.metric == primary.name and e.n < min_units]
    if few:
        return ("inconclusive (too few units)", f"units with a {primary.name} value: {', '.join(few)}; "
                f"at least {min_units} per variant are needed")
    treatments = list(dict.fromkeys(c.treatment for c in comparisons))
    winners, harmed = [], []
    for treatment in treatments:
        mine = [c for c in comparisons if c.treatment == treatment]
        worse = [c.metric for c in mine if c.outcome == "worse"]
        main = next(c for c in mine if c.metric == primary.name)
        if worse:
            harmed.append(f"{treatment} is significantly worse on {', '.join(worse)}")
        elif main.outcome == "better":
            winners.append(main)
    if winners:
        best = max(winners, key=lambda c: c.diff if primary.higher_is_better else -c.diff)
        return (f"promote {best.treatment}", f"{primary.name} {best.diff:+.4g} against {control} "
                f"(Holm p = {best.p_adjusted:.2g}) and no metric significantly worse")
    if len(harmed) == len(treatments):
        return f"keep {control}", "; ".join(harmed)
    return "inconclusive", (f"no treatment is significantly better on {primary.name} without a metric "
                            "significantly worse" + (f" ({'; '.join(harmed)})" if harmed else ""))


def analyze(variants: list[VariantData], specs: list[MetricSpec], alpha: float = 0.05,
            sequential: bool = False, min_units: int = MIN_UNITS) -> Analysis:
    """Compare every treatment (variants[1:]) with the control (variants[0]) on every metric and decide."""
    if not 0 < alpha < 1:
        raise AbTestError(f"alpha {alpha:g}: expected a level in (0, 1)")
    data = _arrays(variants, specs)
    control, treatments = variants[0].name, [v.name for v in variants[1:]]
    test = confidence_sequence if sequential else welch
    estimates = [_estimate(s.name, v.name, data[v.name][s.name], alpha, sequential)
                 for s in specs for v in variants]
    raw = [(s, t, test(data[control][s.name], data[t][s.name], alpha)) for t in treatments for s in specs]
    adjusted = holm([result.p for _, _, result in raw])
    comparisons = [_comparison(spec, treatment, result, p, alpha)
                   for (spec, treatment, result), p in zip(raw, adjusted, strict=True)]
    units = {name: len(arrays[specs[0].name]) for name, arrays in data.items()}
    srm_p = srm_p_value(list(units.values()), [v.weight for v in variants])
    primary = next(s for s in specs if s.primary)
    decision, reason = _decide(srm_p, estimates, comparisons, primary, control, min_units)
    return Analysis(alpha, sequential, min_units, list(specs), {v.name: v.weight for v in variants}, units,
                    estimates, comparisons, srm_p, decision, reason)


def plot(analysis: Analysis, path: Path) -> None:
    """Per metric, each treatment's difference from the control with its interval and a line at zero;
    the format follows the suffix (png, svg, pdf), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = analysis.metrics
    figure, axes = plt.subplots(len(specs), 1, figsize=(6, 1.2 + 1.3 * len(specs)), squeeze=False)
    control = next(iter(analysis.units))
    for ax, spec in zip(axes[:, 0], specs, strict=True):
        rows = [c for c in analysis.comparisons if c.metric == spec.name]
        for y, c in enumerate(rows):
            color = {"better": "tab:green", "worse": "tab:red"}.get(c.outcome, "tab:gray")
            ax.errorbar([c.diff], [y], xerr=[[c.diff - c.ci[0]], [c.ci[1] - c.diff]], fmt="o", color=color,
                        capsize=4)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [f"{c.treatment} - {control}" for c in rows])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        better = "higher" if spec.higher_is_better else "lower"
        ax.set_title(f"{spec.name}{' (primary)' if spec.primary else ''}: {better} is better", fontsize=9)
    kind = "confidence sequence" if analysis.sequential else "confidence interval"
    figure.suptitle(f"{analysis.decision}: differences with their {1 - analysis.alpha:.0%} {kind}",
                    fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=110)
    except ValueError as err:
        raise AbTestError(f"{path}: {err} (expected a .png, .svg or .pdf file)") from None
    finally:
        plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def write_analysis(out: Path, experiment: str, analysis: Analysis) -> None:
    """The analysis as a folder: analysis.json (what promotion and the run report read), analysis.md
    (the tables) and analysis.png (the differences with their intervals)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "analysis.json", {"experiment": experiment, **analysis.to_dict()})
    atomic_write_text(out / "analysis.md", analysis.table())
    plot(analysis, out / "analysis.png")
