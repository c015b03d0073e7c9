"""Benchmark: labelling throughput, batched with length bucketing vs one sample at a time (demo models).

Issue 6 asks for the label stage's forward passes (the GRM's token probabilities and the sampling
policy's old log-probs) at >= 5x the throughput of the published code's approach, which runs the model
on one sample at a time and takes ``log_softmax`` of the full logits. Same models, same samples, one
run: both variants score the first ``--limit`` rows of a ``token_rewards.parquet`` (its prompt ids and
solution ids, and the GRM prompts rebuilt from its text columns), and the values are checked to agree.

    .venv/bin/python benchmarks/bench_label.py --run results/demo [--limit 1000] [--config config/config.yaml] [--vllm]

``--vllm`` also scores the GRM pass through vLLM's prompt log-probs (what the label stage does when the
engine is vLLM) and reports its agreement with the transformers values: the share of tokens with the same
flag ``p_t < 0.5`` and the largest difference of ``p_t``. Writes ``benchmarks/out/bench_label.json``.
At realistic model sizes see ``benchmarks/bench_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from rlmec_core.config import load_config
from rlmec_core.grm.prompts import GRMPrompts
from rlmec_core.io import read_parquet
from rlmec_core.sampling import load_tokenizer
from rlmec_core.schemas import TOKEN_REWARDS
from rlmec_core.scoring import score_targets
from rlmec_core.stages.label import grm_scoring_prompt
from rlmec_core.tasks import get_adapter

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def one_at_a_time(model, prompts, targets) -> list[np.ndarray]:
    """The published approach: a forward pass per sample, ``log_softmax`` over the full vocabulary."""
    model.eval()
    out = []
    for p, t in zip(prompts, targets, strict=True):
        ids = torch.tensor([p + t])
        logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
        pos = torch.arange(len(p) - 1, len(p) + len(t) - 1)
        out.append(logp[pos, torch.tensor(t)].numpy())
    return out


def vllm_agreement(model_dir: Path, prompt_ids, ys, reference: list[np.ndarray], cfg) -> dict:
    """The GRM's p_t through vLLM prompt log-probs (``engine.score_backend: vllm``) against the transformers
    values ``reference``: the share of tokens with the same flag ``p_t < 0.5`` and the largest |difference|."""
    from rlmec_core.config import engine_settings
    from rlmec_core.sampling import open_vllm
    from rlmec_core.scoring import score_targets_vllm

    t0 = time.perf_counter()
    llm = open_vllm(model_dir, engine_settings(cfg["engine"]), scoring=True)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    values = score_targets_vllm(llm, prompt_ids, ys)
    seconds = time.perf_counter() - t0
    del llm
    p_v = np.exp(np.concatenate(values).astype(np.float64))
    p_h = np.exp(np.concatenate(reference).astype(np.float64))
    out = {"tokens": int(p_h.size), "flagged_transformers": int((p_h < 0.5).sum()),
           "same_flags_p_lt_0.5": float(np.mean((p_v < 0.5) == (p_h < 0.5))),
           "differing_flags": int(((p_v < 0.5) != (p_h < 0.5)).sum()),
           "max_abs_p_diff": float(np.abs(p_v - p_h).max()), "vllm_seconds": seconds, "vllm_load_seconds": load}
    print(f"GRM p_t, vLLM vs transformers: same flags (p_t < 0.5) on {out['same_flags_p_lt_0.5']:.4%} of "
          f"{out['tokens']} tokens ({out['differing_flags']} differ), max |diff p_t| {out['max_abs_p_diff']:.1e}; "
          f"vLLM scored in {seconds:.1f} s (+{load:.1f} s engine start)")
    return out


def main() -> None:
    from transformers import AutoModelForCausalLM

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="results/demo", help="run directory with label/, grm/model, policy/sft")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--limit", type=int, default=1000, help="first rows of the labels file (0 = all)")
    parser.add_argument("--vllm", action="store_true",
                        help="also score the GRM pass through vLLM and report its agreement with transformers")
    args = parser.parse_args()
    run = Path(args.run)
    cfg = load_config(args.config)
    rows = read_parquet(run / "label" / "token_rewards.parquet", TOKEN_REWARDS).slice(0, args.limit or None).to_pylist()
    tok = load_tokenizer(run / "policy" / "sft")
    prompts, adapter = GRMPrompts.from_config(cfg["grm"]["prompts"]), get_adapter(cfg["task"]["adapter"])
    grm_prompts = tok([grm_scoring_prompt(prompts, adapter, r["question"], r["reference_solution"], r["prediction"])
                       for r in rows])["input_ids"]
    ys = [r["token_ids"] for r in rows]
    passes = {"grm": (run / "grm" / "model", grm_prompts), "policy": (run / "policy" / "sft", [r["prompt_ids"] for r in rows])}
    result: dict = {"benchmark": "label forward passes: length-bucketed batches vs one sample at a time",
                    "run": str(run), "samples": len(rows), "threads": torch.get_num_threads(),
                    "machine": platform.machine(), "passes": {}}
    total = {"batched": 0.0, "one_at_a_time": 0.0}
    for name, (model_dir, prompt_ids) in passes.items():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        tokens = sum(len(p) + len(y) for p, y in zip(prompt_ids, ys, strict=True))
        score_targets(model, prompt_ids[:8], ys[:8], pad_token_id=tok.pad_token_id)  # warm-up
        t0 = time.perf_counter()
        batched = score_targets(model, prompt_ids, ys, pad_token_id=tok.pad_token_id,
                                batch_tokens=cfg["label"]["batch_tokens"])
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        naive = one_at_a_time(model, prompt_ids, ys)
        t_naive = time.perf_counter() - t0
        diff = max(float(np.abs(a - b).max()) for a, b in zip(batched, naive, strict=True))
        total["batched"] += t_batched
        total["one_at_a_time"] += t_naive
        result["passes"][name] = {"tokens": tokens, "batched_s": t_batched, "one_at_a_time_s": t_naive,
                                  "batched_tokens_per_s": tokens / t_batched, "one_at_a_time_tokens_per_s": tokens / t_naive,
                                  "speedup": t_naive / t_batched, "max_abs_logprob_diff": diff}
        print(f"{name:>7}: {tokens} tokens, batched {t_batched:.1f} s ({tokens / t_batched:,.0f} tok/s), one at a "
              f"time {t_naive:.1f} s ({tokens / t_naive:,.0f} tok/s): {t_naive / t_batched:.1f}x, max |diff| {diff:.1e}")
        if name == "grm" and args.vllm:
            result["vllm_agreement"] = vllm_agreement(model_dir, prompt_ids, ys, batched, cfg)
            del model
    result["speedup"] = total["one_at_a_time"] / total["batched"]
    result["samples_per_s"] = {"batched": len(rows) / total["batched"], "one_at_a_time": len(rows) / total["one_at_a_time"]}
    print(f"labelling forward passes: {result['speedup']:.1f}x the one-sample-at-a-time throughput (goal >= 5x)")
    out = ROOT / "benchmarks" / "out" / "bench_label.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
