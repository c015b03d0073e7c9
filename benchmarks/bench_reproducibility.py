"""Benchmark: is the demo's starting policy the same on another machine?

The bootstrap (stage ``policy_bootstrap``) is trained several times on the same data with the config's
settings, varying only what differs between two users' runs: the bootstrap's seed (model initialisation and
batch order) and the number of CPU threads (``torch.set_num_threads``: another reduction order, a proxy
for another machine's floating point). Each policy is evaluated greedily on the test and validation
splits exactly as the pipeline's ``evaluate`` stage does. The figure that matters is the spread
(max - min) of test accuracy; issue 15 asks for at most 3 points.

    .venv/bin/python benchmarks/bench_reproducibility.py                     # config/config.yaml, seeds 0 1 2
    .venv/bin/python benchmarks/bench_reproducibility.py --config config/smoke.yaml --seeds 0 1 --threads 1 2

Every run is a fresh process (threads are set before torch starts working). The data split is the
config's (its own seed), built once. Writes ``benchmarks/out/bench_reproducibility.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(args: argparse.Namespace) -> None:
    """One bootstrap + evaluation, in this (fresh) process."""
    import torch

    torch.set_num_threads(args.threads)
    from rlmec_core.config import engine_settings, load_config
    from rlmec_core.stages.evaluate import evaluate_policy
    from rlmec_core.stages.policy import bootstrap_policy

    cfg = load_config(args.config)
    data, out = Path(args.data_dir), Path(args.run_dir)
    t0 = time.monotonic()
    card = bootstrap_policy(data / "train.parquet", out / "sft", adapter_name=cfg["task"]["adapter"],
                            prompt_template=cfg["task"]["prompt_template"], bootstrap=cfg["policy"]["bootstrap"],
                            seed=args.seed, checkpoint_dir=out / "ckpt", metrics_path=out / "train.jsonl",
                            validation_path=data / "validation.parquet")
    train_s = time.monotonic() - t0
    result = {"seed": args.seed, "threads": args.threads, "train_seconds": train_s,
              **{k: card.get(k) for k in ("steps", "best_step", "best_metric", "saved_step", "evaluations",
                                          "stopped_early", "parameters")}}
    ev = {k: v for k, v in cfg["evaluate"].items() if k != "splits"}
    for split in ("validation", "test"):
        m = evaluate_policy(out / "sft", data / f"{split}.parquet", out / split / "predictions.parquet",
                            out / split / "metrics.json", adapter_name=cfg["task"]["adapter"],
                            prompt_template=cfg["task"]["prompt_template"], max_new_tokens=ev["max_new_tokens"],
                            engine=engine_settings(cfg["engine"]), seed=cfg["seed"], confidence=ev["confidence"])
        result[split] = {k: m[k] for k in ("accuracy", "ci_low", "ci_high", "correct", "total", "backend")}
    result["curve"] = [{"epoch": r["epoch"], "val_accuracy": r["val_accuracy"]}
                       for r in map(json.loads, (out / "train.jsonl").read_text().splitlines()) if "val_accuracy" in r]
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="bootstrap seeds (at --threads[0])")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                        help="thread counts; the first is used for every seed, the others for the first seed")
    parser.add_argument("--work", help="keep the runs in this directory (default: a temporary one)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "bench_reproducibility.json"))
    # internal: one run in a fresh process
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.threads = args.threads[0]
        worker(args)
        return

    from rlmec_core.config import load_config
    from rlmec_core.stages.data import SPLITS, run_data

    cfg = load_config(args.config)
    work = Path(args.work or tempfile.mkdtemp(prefix="rlmec-repro-"))
    data = work / "data"
    run_data(cfg["task"], cfg["seed"], {s: data / f"{s}.parquet" for s in SPLITS}, data / "stats.json")
    runs = [(seed, args.threads[0]) for seed in args.seeds] + [(args.seeds[0], t) for t in args.threads[1:]]
    results = []
    for seed, threads in runs:
        run_dir = work / f"seed{seed}_threads{threads}"
        result_path = run_dir / "result.json"
        if not result_path.exists():  # rerunning the benchmark with --work reuses finished runs
            run_dir.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, __file__, "--worker", "--config", args.config, "--seed", str(seed), "--threads",
                   str(threads), "--data-dir", str(data), "--run-dir", str(run_dir), "--result", str(result_path)]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            with open(run_dir / "log.txt", "w") as log:
                subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
        r = json.loads(result_path.read_text())
        results.append(r)
        print(f"seed {seed} threads {threads}: test {100 * r['test']['accuracy']:.1f}%  validation "
              f"{100 * r['validation']['accuracy']:.1f}%  (best step {r['best_step']} of {r['steps']}, "
              f"{r['train_seconds']:.0f} s)", flush=True)

    def spread(rows: list[dict], split: str) -> float:
        accs = [r[split]["accuracy"] for r in rows]
        return max(accs) - min(accs)

    by_seed = [r for r in results if r["threads"] == args.threads[0]]
    first = [r for r in results if r["seed"] == args.seeds[0]]
    test = [r["test"]["accuracy"] for r in by_seed]
    summary = {
        "benchmark": "starting-policy reproducibility (bootstrap seeds and CPU threads)",
        "config": str(args.config),
        "command": " ".join([Path(sys.executable).name, "benchmarks/bench_reproducibility.py", *sys.argv[1:]]),
        "cores": os.cpu_count(),
        "runs": results,
        "test_mean": sum(test) / len(test),
        "test_spread_over_seeds": spread(by_seed, "test"),
        "validation_spread_over_seeds": spread(by_seed, "validation"),
        "test_spread_over_threads": spread(first, "test"),
        "validation_spread_over_threads": spread(first, "validation"),
        "test_spread_all_runs": spread(results, "test"),
        "goal_points": 3.0,
    }
    summary["within_goal"] = 100 * summary["test_spread_all_runs"] <= summary["goal_points"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"test accuracy spread: {100 * summary['test_spread_over_seeds']:.1f} points over seeds {args.seeds}, "
          f"{100 * summary['test_spread_over_threads']:.1f} over threads {args.threads}; all runs "
          f"{100 * summary['test_spread_all_runs']:.1f} (goal <= 3)")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
