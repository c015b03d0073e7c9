"""Benchmark: the guard rails on the small-budget run of issue 20.

A user with a given policy and a small budget: `policy.model` = an existing policy (default: the demo's
converged starting policy, `results/demo/policy/sft`, from `snakemake --cores all`), 300-problem draws for
the teacher and for RL, the GRM trained 1 epoch, the RL update 1 epoch at lr 2e-3, everything else from the
demo config. The script copies the workflow into a fresh directory (as `bench_pipeline.py` does) and runs it
twice:

1. with the default pre-flight thresholds: it must stop before the RL update (rule `preflight`), with a
   message naming the GRM's figures and the keys to change; the RL stage must not start;
2. with the stopping thresholds lowered to 0 (a deliberate decision): it runs to the report; the RL stage
   evaluates the starting policy and every half epoch on the validation split and keeps the best
   checkpoint (`rl.select: best`); the health panel's colours are read from the report's inputs.

    .venv/bin/python benchmarks/bench_guardrails.py                    # after the demo run
    .venv/bin/python benchmarks/bench_guardrails.py --policy DIR --lr 2e-3

Writes ``benchmarks/out/bench_guardrails.json`` (``--out``) and prints its summary.
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

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import ROOT, copy_workflow  # noqa: E402

BIN = Path(sys.executable).parent


def small_budget_config(policy: Path, lr: float) -> dict:
    """The issue's run: a given policy, 300-problem draws, the GRM and the RL update one epoch each."""
    return {
        "run": "guard",
        "policy": {"model": str(policy)},
        "sample": {"draws": {"teacher": {"first": 0, "problems": 300}, "rl": {"first": 300, "problems": 300}}},
        "grm": {"train": {"epochs": 1}},
        "rl": {"train": {"epochs": 1, "lr": lr}},
    }


LOWERED = {"grm": {"min_rewrite_correct": 0, "min_error_step_accuracy": 0}, "label": {"min_wrong_samples": 0}}


def health_panel(summary_md: str) -> dict[str, str]:
    """``{check: status}`` as the report's summary.md shows its health panel (the table under "## Health")."""
    section = summary_md.split("## Health", 1)[1].split("\n## ", 1)[0]
    panel = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].split()[-1:] and cells[0].split()[-1] in ("green", "amber", "red"):
            panel[cells[1]] = cells[0].split()[-1]
    return panel


def run(work: Path, *configs: str) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [str(BIN / "snakemake"), "--cores", "all", "--configfile", "config/config.yaml", *configs]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    return proc, time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="results/demo/policy/sft", help="the given policy (default: the demo's)")
    parser.add_argument("--lr", type=float, default=2e-3, help="rl.train.lr of the small-budget run (the issue's)")
    parser.add_argument("--keep", help="run in this directory (created) and keep it")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "bench_guardrails.json"))
    args = parser.parse_args()
    policy = Path(args.policy).resolve()
    if not (policy / "model.safetensors").is_file():
        raise SystemExit(f"{policy}: no policy there; run the demo first (`snakemake --cores all`) or pass --policy")

    from rlmec_core.preflight import read_checks, update_check_from_log

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rlmec-guard-"))
    copy_workflow(work)
    (work / "small.yaml").write_text(yaml.safe_dump(small_budget_config(policy, args.lr)))
    (work / "lowered.yaml").write_text(yaml.safe_dump(LOWERED))
    res = work / "results" / "guard"

    strict, strict_s = run(work, "small.yaml")
    preflight_log = (res / "logs" / "preflight.log").read_text() if (res / "logs" / "preflight.log").exists() else ""
    # the PreflightError's own text (the last occurrence: the traceback quotes the source line first)
    message = preflight_log[preflight_log.rfind("PreflightError: pre-flight checks stopped") + len("PreflightError: "):]
    message = message.split("\n\n")[0].strip()
    stopped = {
        "returncode": strict.returncode,
        "seconds": round(strict_s, 1),
        "stopped_at_preflight": strict.returncode != 0 and "pre-flight checks stopped the run" in preflight_log,
        "rl_started": (res / "logs" / "rl.log").exists(),
        "message": message,
        "names_keys": [k for k in ("grm.min_rewrite_correct", "grm.min_error_step_accuracy", "label.min_wrong_samples")
                       if k in message],
    }
    quality = json.loads((res / "grm" / "quality.json").read_text())
    label = json.loads((res / "label" / "metrics.json").read_text())

    lowered, lowered_s = run(work, "small.yaml", "lowered.yaml")
    if lowered.returncode != 0:
        sys.stderr.write(lowered.stdout[-3000:] + lowered.stderr[-6000:])
        raise SystemExit(f"the run with lowered thresholds failed; kept at {work}")
    checks = read_checks(res / "checks" / "preflight.json")
    records = [json.loads(x) for x in (res / "train_logs" / "rl.jsonl").read_text().splitlines()]
    update = update_check_from_log(records, lr=args.lr)
    card = json.loads((res / "policy" / "rlmec" / "rlmec_model.json").read_text())
    accuracy = {f"{p}/{s}": json.loads((res / "eval" / p / s / "metrics.json").read_text())["accuracy"]
                for p in ("sft", "sft_gold", "rlmec") for s in ("validation", "test")}
    summary = (res / "summary.md").read_text()
    out = {
        "benchmark": "guard rails on the small-budget run (issue 20)",
        "policy": str(policy),
        "config": small_budget_config(Path("<policy>"), args.lr),
        "grm": {k: quality[k] for k in ("validation_wrong", "rewrite_answer_correct", "error_step_accuracy")},
        "labels": {k: label[k] for k in ("labelled", "labelled_wrong")},
        "defaults": stopped,
        "lowered": {
            "seconds": round(lowered_s, 1),
            "health": {c.name: c.status for c in [*checks, *([update] if update else [])]},
            "update_check": update.figure if update else None,
            "update_message": update.message if update else None,
            "rl_evaluations": [(r["step"], r["val_accuracy"]) for r in records if "val_accuracy" in r],
            "rl_saved_step": card["saved_step"], "rl_best_step": card["best_step"], "rl_steps": card["steps"],
            "accuracy": accuracy,
            "health_panel": health_panel(summary),
        },
        "work_dir": str(work) if args.keep else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
