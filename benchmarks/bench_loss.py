"""Benchmark: ``rlmec_loss`` forward+backward (given log-probs) vs a plain masked cross-entropy.

Issue 3 asks for <= 1.3x the time of a masked cross-entropy on the same tokens. Both get the same
log-prob tensors (``[B, T]`` for ``y``, ``[B, U]`` for ``z``, float32, with padding); the baseline is
``tests/naive.py:masked_ce`` with its masks precomputed (``-mean log p`` over the reward tokens of ``y``
plus over the weighted tokens of ``z``), and reads its loss back as a float like a training loop does;
``rlmec_loss`` computes its statistics and value checks too. Timed back to back in one run, median of
repeats, one CPU thread (the ops are too small to split), at the issue's size B=16, T=U=512 and at a
larger B=64, T=U=2048.

In context: the same comparison inside a whole training step (``token_logprobs`` forward and backward
through a small LLaMA for ``y`` and ``z``, then the loss), where the loss is a small part of the work.

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

from rlmec_core.logprobs import token_logprobs  # noqa: E402
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


def bench_training_step(B: int = 8, T: int = 256, vocab: int = 8000, repeats: int = 5) -> dict[str, float]:
    """One training step (log-probs of y and z through a small LLaMA, loss, backward) with each loss."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=384,
                                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                                         max_position_embeddings=T))
    d = make_batch(B, T, T)
    ids_y = torch.randint(0, vocab, (B, T))
    ids_z = torch.randint(0, vocab, (B, T))
    attn_y, attn_z = torch.ones(B, T, dtype=torch.bool), torch.ones(B, T, dtype=torch.bool)
    mask_r, mask_w = (d["r"] != 0).float(), (d["w"] != 0).float()

    def step(use_rlmec: bool) -> None:
        model.zero_grad(set_to_none=True)
        lp = token_logprobs(model, ids_y, attn_y, d["r"] != 0)
        lpz = token_logprobs(model, ids_z, attn_z, d["w"] != 0)
        if use_rlmec:
            loss, _ = rlmec_loss(lp, d["old"], d["r"], lpz, d["w"])
        else:
            loss = masked_ce(lp, mask_r, lpz, mask_w)
        loss.backward()
        float(loss.detach())

    for flag in (True, False):
        step(flag)
    t_rl, t_ce = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        step(False)
        t_ce.append(time.perf_counter() - start)
        start = time.perf_counter()
        step(True)
        t_rl.append(time.perf_counter() - start)
    return {
        "B": B, "T": T, "vocab": vocab,
        "rlmec_step_ms_median": statistics.median(t_rl) * 1e3,
        "ce_step_ms_median": statistics.median(t_ce) * 1e3,
        "ratio_median": statistics.median(t_rl) / statistics.median(t_ce),
    }


def main() -> None:
    torch.set_num_threads(1)
    results = [bench_size(*size) for size in SIZES]
    step = bench_training_step()
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
                "training_step": step,
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
        f"{head['ratio_min']:.2f}-{head['ratio_max']:.2f}; goal <= 1.3x) [{extra}]; whole training step "
        f"B={step['B']} T={step['T']} V={step['vocab']}: {step['rlmec_step_ms_median']:.0f} vs "
        f"{step['ce_step_ms_median']:.0f} ms -> {step['ratio_median']:.3f}x -> {out.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
