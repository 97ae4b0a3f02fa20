from __future__ import annotations

import json
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


def test_defaults_are_the_guides_ten_percent_warmup_and_tenth_of_peak_floor():
    assert warmup_cosine(9, 100, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(99, 100, 1.0) == pytest.approx(0.1)


def test_shortest_schedules_reach_peak_first_and_floor_last():
    assert warmup_cosine(0, 1, 2.0, warmup_fraction=0.0) == pytest.approx(2.0)  # no warm-up: one step
    assert [warmup_cosine(s, 2, 2.0, warmup_fraction=0.0) for s in (0, 1)] == pytest.approx([2.0, 0.2])
    three = [warmup_cosine(s, 3, 2.0, warmup_fraction=0.0) for s in (0, 1, 2)]
    assert three == pytest.approx([2.0, 1.1, 0.2])


def test_plateau_counts_a_tie_as_no_improvement_and_compounds_cuts():
    plateau = Plateau(patience=1, factor=0.5)
    assert plateau.update(2.0) is False
    assert plateau.update(2.0) is True  # equal is not better
    assert (plateau.scale, plateau.bad_evals) == (0.5, 0)
    assert plateau.update(2.0) is True
    assert plateau.scale == pytest.approx(0.25)


def test_plateau_patience_restarts_after_a_cut_and_after_a_new_best():
    plateau = Plateau(patience=2, factor=0.1)
    assert [plateau.update(v) for v in (1.0, 1.5, 1.5, 1.5, 0.5, 0.9, 0.9)] == \
        [False, False, True, False, False, False, True]
    assert plateau.best == 0.5


def test_plateau_state_is_strict_json():
    fresh = json.loads(json.dumps(Plateau().state_dict(), allow_nan=False))
    assert fresh["best"] is None and Plateau.from_state(fresh) == Plateau()
    plateau = Plateau()
    plateau.update(1.25)
    assert Plateau.from_state(json.loads(json.dumps(plateau.state_dict(), allow_nan=False))) == plateau
