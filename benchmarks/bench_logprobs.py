"""Benchmark: peak memory of ``token_logprobs`` vs the naive full ``log_softmax`` + gather.

Issue 3: batch 16 x 512 tokens, vocabulary 32k; report the ratio (goal <= 0.5x). The model is a tiny
LLaMA body (hidden 64, 2 layers) so that the ``[B, T, V]`` tensors dominate. Each variant runs once in a
fresh subprocess: after building the model and inputs and a small warm-up, the process resets its
peak-RSS counter (``/proc/self/clear_refs``), runs the variant, and reports peak RSS minus the RSS just
before. Variants: no gradient (the labelling stage's old log-probs) and forward+backward (training).
Every target position is scored (the worst case for the chunked version, which scores targets only).

Run: ``.venv/bin/python benchmarks/bench_logprobs.py``; writes ``benchmarks/out/bench_logprobs.json``.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
B, T, VOCAB, HIDDEN = 16, 512, 32000, 64
VARIANTS = ("naive_no_grad", "chunked_no_grad", "naive_train", "chunked_train")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(variant: str) -> None:
    """Run one variant in this (fresh) process and print a JSON line with its peak memory."""
    import gc

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(ROOT / "tests"))
    from naive import token_logprobs_full

    from rlmec_core.logprobs import token_logprobs

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=T,
    )
    model = LlamaForCausalLM(config)
    fn = token_logprobs_full if variant.startswith("naive") else token_logprobs
    train = variant.endswith("train")

    def run(ids: torch.Tensor) -> None:
        attn = torch.ones_like(ids)
        target = attn.bool()
        if train:
            model.zero_grad(set_to_none=True)
            fn(model, ids, attn, target).sum().backward()
        else:
            with torch.no_grad():
                fn(model, ids, attn, target)

    run(torch.randint(0, VOCAB, (2, 16)))  # warm-up: lazy initialisation, kernels
    model.zero_grad(set_to_none=True)
    ids = torch.randint(0, VOCAB, (B, T))
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    run(ids)
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    print(json.dumps({"variant": variant, "rss_before_mb": before / 1024, "peak_delta_mb": (peak - before) / 1024,
                      "seconds": seconds}))


def main() -> None:
    results = {}
    for variant in VARIANTS:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", variant], capture_output=True, text=True, check=True, cwd=ROOT
        )
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    ratio_ng = results["chunked_no_grad"]["peak_delta_mb"] / results["naive_no_grad"]["peak_delta_mb"]
    ratio_tr = results["chunked_train"]["peak_delta_mb"] / results["naive_train"]["peak_delta_mb"]
    full_logits_mb = B * T * VOCAB * 4 / 2**20
    out = ROOT / "benchmarks" / "out" / "bench_logprobs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "token_logprobs peak memory vs full log_softmax",
                "batch": B,
                "tokens": T,
                "vocab": VOCAB,
                "hidden": HIDDEN,
                "one_float32_BTV_tensor_mb": full_logits_mb,
                "variants": results,
                "ratio_no_grad": ratio_ng,
                "ratio_train": ratio_tr,
                "goal": "<= 0.5x",
                "python": platform.python_version(),
            },
            indent=2,
        )
        + "\n"
    )
    r = results
    print(
        f"token_logprobs peak memory, B={B} T={T} V={VOCAB}: no-grad {r['chunked_no_grad']['peak_delta_mb']:.0f} MB "
        f"vs full log_softmax {r['naive_no_grad']['peak_delta_mb']:.0f} MB -> {ratio_ng:.3f}x; forward+backward "
        f"{r['chunked_train']['peak_delta_mb']:.0f} MB vs {r['naive_train']['peak_delta_mb']:.0f} MB -> {ratio_tr:.3f}x "
        f"(goal <= 0.5x) -> {out.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        child(sys.argv[2])
    else:
        main()
