"""Benchmark: ``rlmec_loss`` forward+backward (given log-probs) vs a plain masked cross-entropy.

Issue 3 asks for <= 1.3x the time of a masked cross-entropy on the same tokens. Both get the same
log-prob tensors (``[B, T]`` for ``y``, ``[B, U]`` for ``z``, float32, with padding); the baseline is
``tests/naive.py:masked_ce`` with its masks precomputed (``-mean log p`` over the reward tokens of ``y``
plus over the weighted tokens of ``z``), and reads its loss back as a float like a training loop does;
``rlmec_loss`` computes its statistics and value checks too. Timed back to back in one run, median of
repeats, one CPU thread (the ops are too small to split), at the issue's size B=16, T=U=512 and at a
larger B=64, T=U=2048.

Run: ``.venv/bin/python benchmarks/bench_loss.py``; writes ``benchmarks/out/bench_loss.json``.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # naive twins
sys.path.insert(0, str(ROOT))

from naive import masked_ce  # noqa: E402

from rlmec_core.losses import rlmec_loss  # noqa: E402

REPEATS = 7
SIZES = [(16, 512, 512), (64, 2048, 2048)]


def make_batch(B: int, T: int, U: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask_y = torch.arange(T)[None] < torch.randint(T // 2, T + 1, (B, 1), generator=g)
    mask_z = torch.arange(U)[None] < torch.randint(U // 2, U + 1, (B, 1), generator=g)
    lp = torch.where(mask_y, -torch.rand(B, T, generator=g) * 4, 0.0)
    old = torch.where(mask_y, lp + 0.3 * torch.randn(B, T, generator=g), 0.0)
    p = torch.rand(B, T, generator=g)
    correct = (torch.arange(B) % 2 == 0)[:, None]
    r = torch.where(correct, (p - 0.5).clamp(0, 0.5), (p - 0.5).clamp(-0.1, 0))
    r = torch.where(mask_y, r, 0.0)
    lpz = torch.where(mask_z, -torch.rand(B, U, generator=g) * 4, 0.0)
    w = torch.where(mask_z, torch.where(torch.rand(B, U, generator=g) < 0.3, 1.0, 0.5), 0.0)
    return {"lp": lp, "old": old, "r": r, "lpz": lpz, "w": w}


def bench_size(B: int, T: int, U: int) -> dict[str, float]:
    d = make_batch(B, T, U)
    lp = d["lp"].clone().requires_grad_()
    lpz = d["lpz"].clone().requires_grad_()
    mask_r, mask_w = (d["r"] != 0).float(), (d["w"] != 0).float()

    def run_rlmec() -> None:
        lp.grad = lpz.grad = None
        loss, _stats = rlmec_loss(lp, d["old"], d["r"], lpz, d["w"])
        loss.backward()

    def run_ce() -> None:
        lp.grad = lpz.grad = None
        loss = masked_ce(lp, mask_r, lpz, mask_w)
        loss.backward()
        float(loss.detach())

    number = max(20, 2_000_000 // (B * T))
    for fn in (run_rlmec, run_ce):  # warm-up
        for _ in range(10):
            fn()
    t_rl, t_ce, ratios = [], [], []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(number):
            run_ce()
        ce = (time.perf_counter() - start) / number
        start = time.perf_counter()
        for _ in range(number):
            run_rlmec()
        rl = (time.perf_counter() - start) / number
        t_ce.append(ce)
        t_rl.append(rl)
        ratios.append(rl / ce)
    return {
        "B": B,
        "T": T,
        "U": U,
        "rlmec_loss_us_median": statistics.median(t_rl) * 1e6,
        "masked_ce_us_median": statistics.median(t_ce) * 1e6,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def main() -> None:
    torch.set_num_threads(1)
    results = [bench_size(*size) for size in SIZES]
    head = results[0]
    out = ROOT / "benchmarks" / "out" / "bench_loss.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "rlmec_loss fwd+bwd vs masked cross-entropy, given log-probs",
                "goal": "<= 1.3x",
                "repeats": REPEATS,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "python": platform.python_version(),
                "sizes": results,
            },
            indent=2,
        )
        + "\n"
    )
    extra = "; ".join(
        f"B={r['B']} T=U={r['T']}: {r['rlmec_loss_us_median']:.0f} vs {r['masked_ce_us_median']:.0f} us "
        f"-> {r['ratio_median']:.2f}x"
        for r in results[1:]
    )
    print(
        f"rlmec_loss fwd+bwd B={head['B']} T=U={head['T']}: {head['rlmec_loss_us_median']:.0f} us vs masked CE "
        f"{head['masked_ce_us_median']:.0f} us -> {head['ratio_median']:.2f}x (median of {REPEATS}, range "
        f"{head['ratio_min']:.2f}-{head['ratio_max']:.2f}; goal <= 1.3x) [{extra}] -> {out.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
