"""Accuracy with confidence intervals."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int
    accuracy: float
    ci_low: float  # Wilson score interval
    ci_high: float
    confidence: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        pct = 100 * self.confidence
        return (f"{100 * self.accuracy:.1f}% ({self.correct}/{self.total}; {pct:.0f}% CI "
                f"{100 * self.ci_low:.1f}-{100 * self.ci_high:.1f}%)")


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``correct / total``.

    Better behaved than the normal approximation near 0 and 1 and for small ``total``. For
    ``total == 0`` the interval is the uninformative ``(0.0, 1.0)``.
    """
    if total < 0 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total, got correct={correct}, total={total}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if total == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    lo = 0.0 if correct == 0 else max(0.0, centre - half)  # exact at the ends (no rounding residue)
    hi = 1.0 if correct == total else min(1.0, centre + half)
    return lo, hi


def accuracy(flags: list[bool], confidence: float = 0.95) -> Accuracy:
    """Accuracy of a list of per-problem correctness flags, with its Wilson interval."""
    n, k = len(flags), sum(bool(f) for f in flags)
    lo, hi = wilson_interval(k, n, confidence)
    return Accuracy(correct=k, total=n, accuracy=k / n if n else 0.0, ci_low=lo, ci_high=hi, confidence=confidence)
