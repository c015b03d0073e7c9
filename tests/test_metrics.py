"""Accuracy and its Wilson interval."""

import math

import pytest

from rlmec_core.metrics import accuracy, wilson_interval


def naive_wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (45, 100), (412, 1000), (1, 1)])
def test_wilson_matches_the_textbook_formula(k, n):
    lo, hi = wilson_interval(k, n)
    nlo, nhi = naive_wilson(k, n)
    assert lo == pytest.approx(max(0.0, nlo), abs=1e-12)
    assert hi == pytest.approx(min(1.0, nhi), abs=1e-12)
    assert lo <= k / n <= hi


def test_known_value():
    # 50/100 at 95%: the Wilson interval is 0.4038..0.5962 (standard reference value)
    lo, hi = wilson_interval(50, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)


def test_accuracy_summary_and_bad_input():
    acc = accuracy([True, False, True, True])
    assert (acc.correct, acc.total, acc.accuracy) == (3, 4, 0.75)
    assert "75.0%" in str(acc)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)
    with pytest.raises(ValueError):
        wilson_interval(1, 3, confidence=1.5)
