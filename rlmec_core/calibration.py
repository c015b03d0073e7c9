"""Calibration of the GRM's token probabilities against the teacher's edits.

The label stage turns the GRM's probability ``p_t`` of each token of a prediction into a reward: a token
the GRM would keep (``p_t`` near 1) is rewarded, one it would change (``p_t`` near 0) penalised. Whether
``p_t`` deserves that trust is measured on held-out predictions the teacher rewrote: bucket the tokens by
``p_t`` and count, per bucket, the share the teacher's minimal rewrite edited (deleted or substituted).
A calibrated GRM edits a share ``1 - p`` of the tokens in a bucket of mean probability ``p``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["DEFAULT_BINS", "calibration_table"]

DEFAULT_BINS = 10  # equal-width buckets of p_t on [0, 1] in grm/quality.json


def calibration_table(probs: Sequence[float] | np.ndarray, edited: Sequence[bool] | np.ndarray,
                      bins: int = DEFAULT_BINS) -> list[dict[str, Any]]:
    """Tokens and the share edited per equal-width bucket of ``p_t`` on ``[0, 1]``.

    Args:
        probs: ``[N]`` token probabilities ``p_t`` in ``[0, 1]`` (every token of every scored prediction,
            concatenated).
        edited: ``[N]`` bools, True where the teacher's rewrite deletes or substitutes the token.
        bins: number of buckets; bucket ``i`` holds ``i / bins <= p_t < (i + 1) / bins`` (the last one
            also ``p_t = 1``).

    Returns:
        ``bins`` dicts in bucket order, JSON-ready: ``lo``, ``hi`` (the bucket's edges), ``tokens``,
        ``edited`` (counts), ``share_edited`` (``edited / tokens``, None for an empty bucket) and ``mean_p``
        (the mean ``p_t`` of its tokens, None for an empty bucket).

    Raises:
        ValueError: ``bins < 1``; ``probs`` and ``edited`` differ in length or are not 1-D; a probability
            is NaN or outside ``[0, 1]``.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    p = np.asarray(probs, dtype=np.float64)
    e = np.asarray(edited, dtype=bool)
    if p.ndim != 1 or e.ndim != 1 or p.shape != e.shape:
        raise ValueError(f"probs and edited must be 1-D of one length, got shapes {p.shape} and {e.shape}")
    if p.size and (np.isnan(p).any() or p.min() < 0.0 or p.max() > 1.0):
        bad = p[np.isnan(p) | (p < 0.0) | (p > 1.0)][0]
        raise ValueError(f"probs must lie in [0, 1], got {float(bad)!r}")
    edges = np.arange(bins + 1, dtype=np.float64) / bins  # i / bins exactly as Python computes it
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    tokens = np.bincount(index, minlength=bins)
    n_edited = np.bincount(index, weights=e.astype(np.float64), minlength=bins)
    p_sum = np.bincount(index, weights=p, minlength=bins)
    return [
        {
            "lo": float(edges[i]),
            "hi": float(edges[i + 1]),
            "tokens": int(tokens[i]),
            "edited": int(round(n_edited[i])),
            "share_edited": float(n_edited[i] / tokens[i]) if tokens[i] else None,
            "mean_p": float(p_sum[i] / tokens[i]) if tokens[i] else None,
        }
        for i in range(bins)
    ]

