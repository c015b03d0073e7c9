"""Benchmark: sampling throughput of the vLLM backend vs the transformers backend on the demo policy.

Issue 2 asks for a tokens/s ratio (vLLM / transformers) of at least 5x. Both backends get the same
prompts (demo test questions) and generate exactly the same number of tokens per prompt
(``ignore_eos``, fixed ``max_new_tokens``), with RL-sampling settings (n samples, temperature 0.7,
top-p 0.95). Timed back to back in one process run; engine start-up is reported separately and not
counted in tokens/s (it is paid once per stage).

Run (after the demo's policy exists, e.g. `snakemake --cores all` or `make demo`):

    .venv/bin/python benchmarks/bench_sampling.py [--model results/demo/policy/sft] [--data data/arith/test.parquet]

Writes ``benchmarks/out/bench_sampling.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlmec_core.sampling import EngineSettings, SampleSettings, generate, tokens_per_second  # noqa: E402
from rlmec_core.stages.data import load_problems  # noqa: E402
from rlmec_core.tasks import get_adapter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "results/demo/policy/sft"))
    parser.add_argument("--data", default=str(ROOT / "data/arith/test.parquet"))
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--hf-batch-size", type=int, default=64)
    args = parser.parse_args()

    adapter = get_adapter("arith")
    problems = load_problems(args.data)[: args.prompts]
    prompts = [adapter.format_prompt(p.question) for p in problems]
    settings = SampleSettings(n=args.n, temperature=0.7, top_p=0.95, max_new_tokens=args.new_tokens, seed=0,
                              ignore_eos=True)
    results = {}
    for backend in ("vllm", "hf"):
        res = generate(args.model, prompts, settings, EngineSettings(backend=backend, hf_batch_size=args.hf_batch_size))
        assert res.generated_tokens == len(prompts) * args.n * args.new_tokens, "backends must generate equal lengths"
        results[backend] = {
            "tokens": res.generated_tokens,
            "generate_seconds": round(res.generate_seconds, 3),
            "tokens_per_s": round(tokens_per_second(res), 1),
            "engine_load_seconds": round(res.load_seconds, 2),
        }
        print(f"{backend:>5}: {res.generated_tokens} tokens in {res.generate_seconds:.2f} s "
              f"= {tokens_per_second(res):,.0f} tokens/s (engine load {res.load_seconds:.1f} s)", flush=True)
    ratio = results["vllm"]["tokens_per_s"] / results["hf"]["tokens_per_s"]
    summary = {
        "benchmark": "sampling vLLM vs transformers",
        "model": args.model,
        "prompts": len(prompts),
        "samples_per_prompt": args.n,
        "new_tokens": args.new_tokens,
        "hf_batch_size": args.hf_batch_size,
        "results": results,
        "ratio_vllm_over_hf": round(ratio, 2),
        "goal": ">= 5x",
        "machine": f"{platform.machine()} {platform.processor() or ''} cores={__import__('os').cpu_count()}",
    }
    out = ROOT / "benchmarks" / "out" / "bench_sampling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"vLLM / transformers tokens/s: {ratio:.2f}x (goal >= 5x) -> {out.relative_to(ROOT)}")


if __name__ == "__main__":  # vLLM spawns workers that re-import this module
    main()
