"""Benchmark: ``rlmec_core.edits.align`` vs the naive O(nm) Python DP on 512 x 512-token pairs.

Issue 3 asks for >= 100x. Both produce the distance and a per-token alignment (the DP is
``tests/naive.py:levenshtein_dp``, the approach of the published code). Pairs: a 512-token solution
and a 512-token rewrite that keeps a prefix and edits the rest (realistic), plus unrelated random pairs
(the worst case for both). Timed back to back in one run, median over repeats.

Run: ``.venv/bin/python benchmarks/bench_align.py``; writes ``benchmarks/out/bench_align.json``.
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # naive twins
sys.path.insert(0, str(ROOT))

from naive import levenshtein_dp  # noqa: E402

from rlmec_core.edits import align  # noqa: E402

LENGTH = 512
VOCAB = 32000
REPEATS = 5


def make_pairs(seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(2):  # rewrite: keep a prefix, then a partly edited continuation, cut to 512 tokens
        y = [rng.randrange(VOCAB) for _ in range(LENGTH)]
        cut = rng.randrange(LENGTH // 4, LENGTH // 2)
        z = y[:cut]
        for tok in y[cut:]:
            roll = rng.random()
            if roll < 0.15:
                z.append(rng.randrange(VOCAB))  # substitution
            elif roll < 0.25:
                z.extend([rng.randrange(VOCAB), tok])  # insertion
            elif roll >= 0.35:
                z.append(tok)  # kept (else deleted)
        z = (z + [rng.randrange(VOCAB) for _ in range(LENGTH)])[:LENGTH]
        pairs.append((y, z))
    for _ in range(2):  # unrelated sequences over a small vocabulary (many partial matches)
        pairs.append(([rng.randrange(50) for _ in range(LENGTH)], [rng.randrange(50) for _ in range(LENGTH)]))
    return pairs


def time_per_pair(fn, pairs, number: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(number):
        for a, b in pairs:
            fn(a, b)
    return (time.perf_counter() - start) / (number * len(pairs))


def main() -> None:
    pairs = make_pairs()
    for a, b in pairs:  # same distances before timing anything
        assert align(a, b).distance == levenshtein_dp(a, b)[0]
    naive_times, fast_times, ratios = [], [], []
    for _ in range(REPEATS):
        t_naive = time_per_pair(levenshtein_dp, pairs, 1)
        t_fast = time_per_pair(align, pairs, 50)
        naive_times.append(t_naive)
        fast_times.append(t_fast)
        ratios.append(t_naive / t_fast)
    result = {
        "benchmark": "align 512x512 tokens vs naive Python DP",
        "pairs": len(pairs),
        "length": LENGTH,
        "repeats": REPEATS,
        "naive_dp_ms_per_pair_median": statistics.median(naive_times) * 1e3,
        "align_ms_per_pair_median": statistics.median(fast_times) * 1e3,
        "speedup_median": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "goal": ">= 100x",
        "python": platform.python_version(),
    }
    out = ROOT / "benchmarks" / "out" / "bench_align.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"align 512x512: {result['align_ms_per_pair_median']:.3f} ms/pair vs naive DP "
        f"{result['naive_dp_ms_per_pair_median']:.1f} ms/pair -> {result['speedup_median']:.0f}x faster "
        f"(median of {REPEATS}, range {min(ratios):.0f}-{max(ratios):.0f}x; goal >= 100x) -> {out.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
