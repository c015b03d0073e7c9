"""Benchmark: iterative RLMEC against same-budget baselines on the demo, as a user runs it.

Copies the workflow into a fresh directory and runs, one after the other:
1. the default target (`snakemake --cores all`, rounds: 1): its wall time is the demo's time budget (<= 20 min
   on 2 cores, issue 17);
2. `snakemake --cores all compare --configfile config/rounds.yaml`: three rounds of rlmec (GRM refreshed each
   round), iterated RFT, GRPO and step-matched sft_gold, three seeds each, reusing step 1's outputs.

    .venv/bin/python benchmarks/bench_rounds.py [--keep DIR]

Writes ``benchmarks/out/bench_rounds.json``: both wall times, per-rule seconds, the accuracy-by-round summary
(``compare/rounds.json``), the one-round comparison (``compare/table.json``) and the sft_gold sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_pipeline import copy_workflow, rule_benchmarks  # benchmarks/ is the script's directory

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd: list[str], work: Path) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}); run directory kept at {work}")
    return wall


def rule_seconds(results: Path) -> dict[str, float]:
    return {name: r["seconds"] for name, r in rule_benchmarks(results).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="run in this directory (created) and keep it")
    parser.add_argument("--cores", default="all")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rlmec-rounds-"))
    copy_workflow(work)
    smk = str(BIN / "snakemake")
    default_cmd = [smk, "--cores", args.cores]
    rounds_cmd = [smk, "--cores", args.cores, "compare", "--configfile", "config/rounds.yaml"]
    resumed = (work / "results" / "demo" / "report.html").exists()  # a kept directory with the default target done
    default_wall = run(default_cmd, work)
    default_rules = rule_seconds(work / "results" / "demo")
    print(f"default target: {default_wall / 60:.1f} min{' (resumed: already done)' if resumed else ''}", flush=True)
    rounds_wall = run(rounds_cmd, work)
    results = work / "results" / "demo"
    summary = {
        "benchmark": "iterative RLMEC against same-budget baselines (config/rounds.yaml)",
        "commands": [" ".join(default_cmd), " ".join(rounds_cmd)],
        "cores": os.cpu_count(),
        "default_target_wall_seconds": round(default_wall, 1),
        "default_target_resumed": resumed,
        "rounds_compare_wall_seconds": round(rounds_wall, 1),
        "default_target_rules": default_rules,
        "rules": rule_seconds(results),
        "rounds": json.loads((results / "compare" / "rounds.json").read_text()),
        "comparison": json.loads((results / "compare" / "table.json").read_text()),
        "sweep": json.loads((results / "compare" / "sweep.json").read_text()),
        "rounds_table": (results / "compare" / "rounds.md").read_text(),
    }
    out = ROOT / "benchmarks" / "out" / "bench_rounds.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"rounds comparison: {rounds_wall / 60:.1f} min")
    print(summary["rounds_table"])
    print(f"-> {out.relative_to(ROOT)}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
