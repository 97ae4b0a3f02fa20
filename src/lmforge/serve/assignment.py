"""A/B test assignment: which variant a user sees, as a pure function of (experiment, seed, user id).

The server must give a user the same variant on every request, on every replica and after every
restart, without storing anything: a hash of the user id does that. The hash is GrowthBook's, so
that an experiment configured here buckets users exactly as GrowthBook's SDKs would (and its
published conformance vectors test this port):

- FNV-1a 32-bit over the string's UTF-16 code units (JavaScript's `charCodeAt`), not its UTF-8 bytes;
- hash version 2 (unbiased): `fnv32a(str(fnv32a(seed + id))) % 10000 / 10000`; version 1, the
  SDK's legacy default, is biased and only kept for the conformance vectors. `assign` always uses 2;
- the unit interval is cut into one range per variant, `[start, start + coverage * weight)`, at
  the cumulative weights: a user whose hash falls in no range (coverage < 1) is not in the
  experiment at all, and changing coverage later only adds or removes users, never moves them
  between variants.

The seed defaults to the experiment key; give a new seed to reshuffle users for a new experiment
that reuses a key.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmforge.errors import LmforgeError

FNV_OFFSET_BASIS = 0x811C9DC5
FNV_PRIME = 0x01000193
WEIGHT_TOLERANCE = 0.01
"""GrowthBook accepts weights summing to 1 +- 0.01 and otherwise falls back to equal weights."""


class AssignmentError(LmforgeError):
    """An experiment setting the user can fix (weights that do not sum to 1, coverage outside [0, 1])."""


def fnv32a(s: str) -> int:
    """FNV-1a 32-bit over UTF-16 code units, as JavaScript iterates a string (an astral character
    is two code units; a lone surrogate is hashed as itself, hence `surrogatepass`)."""
    h = FNV_OFFSET_BASIS
    data = s.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        h = ((h ^ (data[i] | data[i + 1] << 8)) * FNV_PRIME) & 0xFFFFFFFF
    return h


def gb_hash(seed: str, value: str, version: int = 2) -> float | None:
    """GrowthBook's `hash`: a number in [0, 1) for `value` under `seed`; None for an unknown version
    (the SDK then assigns no variation)."""
    if version == 2:
        return (fnv32a(str(fnv32a(seed + value))) % 10000) / 10000
    if version == 1:
        return (fnv32a(value + seed) % 1000) / 1000
    return None


def _equal_weights(n: int) -> list[float]:
    return [1 / n] * n if n > 0 else []


def bucket_ranges(n: int, coverage: float = 1.0,
                  weights: Sequence[float] | None = None) -> list[tuple[float, float]]:
    """GrowthBook's `getBucketRanges`: one [start, end) range per variant. Coverage is clamped to
    [0, 1]; weights of the wrong length, or not summing to 1 +- 0.01, are replaced by equal weights
    (the SDK's forgiving behaviour; `check_weights` is the strict check for settings)."""
    coverage = min(max(coverage, 0.0), 1.0)
    equal = _equal_weights(n)
    chosen = list(weights) if weights is not None else equal
    if len(chosen) != n or abs(sum(chosen) - 1) > WEIGHT_TOLERANCE:
        chosen = equal
    ranges, cumulative = [], 0.0
    for weight in chosen:
        start = cumulative
        cumulative += weight
        ranges.append((start, start + coverage * weight))
    return ranges


def choose_variation(n: float, ranges: Sequence[Sequence[float]]) -> int:
    """The index of the first range holding `n` (ranges are [start, end)), -1 when none does."""
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return -1


def check_weights(weights: Sequence[float], coverage: float = 1.0) -> None:
    """Raise `AssignmentError` where `bucket_ranges` would silently fall back to equal weights or clamp
    coverage: the server reads its experiment settings through this, so a typo fails at start-up
    instead of running a different split than the one configured."""
    if len(weights) < 2:
        raise AssignmentError(f"experiment weights {list(weights)}: expected at least two variants")
    if any(not 0 <= w <= 1 for w in weights):
        raise AssignmentError(f"experiment weights {list(weights)}: expected each weight in [0, 1]")
    if abs(sum(weights) - 1) > WEIGHT_TOLERANCE:
        raise AssignmentError(f"experiment weights {list(weights)} sum to {sum(weights):g}: expected 1")
    if not 0 <= coverage <= 1:
        raise AssignmentError(f"experiment coverage {coverage:g}: expected a share in [0, 1]")


def assign(experiment_key: str, user_id: str, weights: Sequence[float], coverage: float = 1.0,
           seed: str | None = None) -> int | None:
    """The variant index of `user_id` in the experiment (hash version 2; no seed, or an empty one,
    means the key, as in GrowthBook), or None when the user is not in it: outside `coverage`, or no
    user id to hash (anonymous requests must not all land in one bucket)."""
    if not user_id:
        return None
    n = gb_hash(seed or experiment_key, user_id, 2)
    variant = choose_variation(n, bucket_ranges(len(weights), coverage, weights))
    return None if variant < 0 else variant
