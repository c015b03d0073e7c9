"""Benchmark: the whole pipeline from scratch, as a user runs it (`snakemake --cores all`).

Copies the workflow (Snakefile, workflow/, config/, profiles/) into a fresh temporary directory, runs
Snakemake there with the given config, and reports the wall time, each rule's time from its
`benchmark:` file, the peak resident memory of any single job, and the accuracies in the metrics files.
Issue 2 asks for: the default config's data/policy/evaluate stages in <= 10 min on a 2-core machine with the
bootstrap policy at 30-70% greedy test accuracy, and the smoke pipeline in <= 3 min. Issue 6: the whole
RLMEC pipeline in <= 20 min with peak memory <= 4 GB, and RLMEC above the bootstrap policy on the test
split with the difference outside the 95% interval.

    .venv/bin/python benchmarks/bench_pipeline.py                       # config/config.yaml
    .venv/bin/python benchmarks/bench_pipeline.py --config config/smoke.yaml

Writes ``benchmarks/out/bench_pipeline_<run>.json``; ``--keep DIR`` keeps the run directory.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def copy_workflow(work: Path) -> None:
    """Copy what a user's clone runs (Snakefile, workflow/, config/, profiles/, environment.yml) into ``work``,
    replacing an earlier copy there (a kept run directory keeps its results)."""
    work.mkdir(parents=True, exist_ok=True)
    for item in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src, dst = ROOT / item, work / item
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)


def rule_benchmarks(results: Path) -> dict[str, dict[str, float | None]]:
    """Each job's wall seconds and peak resident memory (MB) from the `benchmark:` files of a run directory."""
    rules = {}
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        with tsv.open() as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        rules[str(tsv.relative_to(results / "benchmarks").with_suffix(""))] = {
            "seconds": round(float(row["s"]), 1),
            "max_rss_mb": round(float(row["max_rss"]), 0) if row["max_rss"] not in ("", "NA", "-") else None,
        }
    return rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--keep", help="run in this directory (created) and keep it")
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rlmec-bench-"))
    copy_workflow(work)
    cmd = [str(BIN / "snakemake"), "--cores", args.cores]
    if Path(args.config) != Path("config/config.yaml"):
        cmd += ["--configfile", args.config]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"snakemake failed (exit {proc.returncode}); run directory kept at {work}")

    results = next((work / "results").iterdir())
    rules = rule_benchmarks(results)
    accuracy = {}
    for m in sorted((results / "eval").glob("*/*/metrics.json")):
        data = json.loads(m.read_text())
        accuracy[f"{m.parts[-3]}/{m.parts[-2]}"] = {
            k: data[k] for k in ("accuracy", "ci_low", "ci_high", "correct", "total", "backend")
        }
    summary = {
        "benchmark": "pipeline from scratch",
        "config": args.config,
        "command": " ".join(cmd),
        "wall_seconds": round(wall, 1),
        "rules": rules,
        "peak_job_rss_mb": max((r["max_rss_mb"] or 0) for r in rules.values()) if rules else None,
        "accuracy": accuracy,
        "cores": os.cpu_count(),
    }
    sft, rl = accuracy.get("sft/test"), accuracy.get("rlmec/test")
    if sft and rl:
        summary["rlmec_vs_sft_test"] = {
            "difference": rl["accuracy"] - sft["accuracy"],
            "rlmec_above_sft_interval": rl["accuracy"] > sft["ci_high"],
            "intervals_disjoint": rl["ci_low"] > sft["ci_high"],
        }
    out = ROOT / "benchmarks" / "out" / f"bench_pipeline_{results.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.config}: {wall / 60:.1f} min wall on {os.cpu_count()} cores")
    for name, r in rules.items():
        print(f"  {name:<28} {r['seconds']:7.1f} s  rss {r['max_rss_mb']} MB")
    for name, a in accuracy.items():
        print(f"  accuracy {name:<18} {100 * a['accuracy']:.1f}% [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}] "
              f"({a['correct']}/{a['total']}, {a['backend']})")
    if "rlmec_vs_sft_test" in summary:
        print(f"  rlmec vs sft on test: {summary['rlmec_vs_sft_test']}")
    print(f"-> {out.relative_to(ROOT)}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
