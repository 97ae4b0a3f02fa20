from __future__ import annotations

import math

import pytest

from lmforge.train.schedule import Plateau, warmup_cosine

PEAK, TOTAL = 5e-5, 1000


def lr(step: int) -> float:
    return warmup_cosine(step, TOTAL, PEAK, warmup_fraction=0.1, min_ratio=0.1)


def test_linear_warmup_over_first_ten_percent():
    assert lr(0) == pytest.approx(PEAK / 100)
    assert lr(49) == pytest.approx(PEAK / 2)
    assert lr(99) == pytest.approx(PEAK)
    assert all(lr(s) < lr(s + 1) for s in range(99))


def test_cosine_decays_to_a_tenth_of_peak():
    assert lr(TOTAL - 1) == pytest.approx(PEAK / 10)
    middle = 99 + (TOTAL - 1 - 99) / 2
    assert lr(int(middle)) == pytest.approx(PEAK * 0.55, rel=1e-3)
    assert all(lr(s) >= lr(s + 1) for s in range(99, TOTAL - 1))
    assert lr(TOTAL + 50) == pytest.approx(PEAK / 10)


def test_plateau_cuts_rate_after_patience_and_survives_a_round_trip():
    plateau = Plateau(patience=2, factor=0.1)
    assert [plateau.update(v) for v in (3.0, 2.5, 2.6, 2.7)] == [False, False, False, True]
    assert plateau.scale == pytest.approx(0.1)
    restored = Plateau.from_state(plateau.state_dict())
    assert restored == plateau
    assert Plateau.from_state(Plateau().state_dict()).best == math.inf
