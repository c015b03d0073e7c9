"""Benchmark: crash-and-rerun of every stage of the smoke pipeline, with more kills than the tests.

The procedure is the tests' (tests/killing.py::crash_and_rerun, tests/test_reliability.py): one uninterrupted
smoke run (engine.backend hf) is the reference; for each stage a copy forces the stage's job, SIGKILLs the
Snakemake process group at seeded random points (`--kills` times, each rerun killed again), lets the last
rerun finish and compares with the reference. Two extra probes:

- ``rl_long``: the RL stage with more steps (``rl.train: {epochs: 3, batch_size: 1, checkpoint_every: 1,
  log_every: 1}``) than the smoke config's single step, so that kills land between checkpoints and the rerun
  resumes;
- ``lock``: a killed Snakemake leaves its lock: what the next plain run says, and that `--unlock` clears it.

    .venv/bin/python benchmarks/bench_reliability.py                 # reference run + 3 kills per stage
    .venv/bin/python benchmarks/bench_reliability.py --reference DIR # reuse a finished reference run

Writes ``benchmarks/out/bench_reliability.json`` and prints the table docs/reliability.md quotes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from killing import after, crash_and_rerun, file_exists, run_and_kill, smoke_stages  # noqa: E402
from test_reliability import OVERRIDES, reference_run, snakemake_cmd  # noqa: E402

# The smoke labels hold very few samples (2 in the reference run): one per batch, three epochs.
RL_LONG = {"rl": {"train": {"epochs": 3, "lr": 1.0e-3, "batch_size": 1, "checkpoint_every": 1, "log_every": 1}}}


def lock_probe(ref: Path, work: Path) -> dict:
    """Kill a locked Snakemake run mid-job; the next plain run must refuse with the lock message, and run
    after `snakemake --unlock`."""
    shutil.copytree(ref, work, symlinks=True)
    stage = smoke_stages()[0]
    locked = [*[c for c in snakemake_cmd() if c != "--nolock"], "--cores", "2"]  # an option ends the configfiles
    (work / stage.log).unlink(missing_ok=True)
    out = run_and_kill([*locked, *stage.targets, "--force"], work, after(file_exists(work / stage.log), 0.5))
    again = subprocess.run([*locked, *stage.targets], cwd=work, capture_output=True, text=True)
    unlock = subprocess.run([*locked, "--unlock"], cwd=work, capture_output=True, text=True)
    rerun = subprocess.run([*locked, *stage.targets], cwd=work, capture_output=True, text=True)
    text = again.stdout + again.stderr
    return {"killed_mid_job": out.killed and out.job_alive, "plain_rerun_returncode": again.returncode,
            "plain_rerun_says_locked": "Directory cannot be locked" in text and "--unlock" in text,
            "unlock_returncode": unlock.returncode, "rerun_after_unlock_returncode": rerun.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3, help="kills per stage (each rerun is killed again)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reference", help="a finished reference run (made by this script or the tests)")
    parser.add_argument("--only", nargs="*", help="stage names (default: all, plus rl_long and lock)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "bench_reliability.json"))
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(Path(args.out).read_text()))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_reliability_"))
    t0 = time.monotonic()
    if args.reference:
        ref = Path(args.reference).resolve()
        ref_seconds = None
    else:
        ref = reference_run(tmp / "reference")
        ref_seconds = round(time.monotonic() - t0, 1)
    stages = {s.name: s for s in smoke_stages()}
    names = args.only or [*stages, "rl_long", "lock"]
    results: dict = {"benchmark": "crash-and-rerun of every smoke stage", "overrides": OVERRIDES, "kills": args.kills,
                     "seed": args.seed, "reference_seconds": ref_seconds, "stages": {}}
    for i, name in enumerate(names):
        t = time.monotonic()
        if name == "lock":
            results["lock"] = lock_probe(ref, tmp / "lock")
            print(f"lock: {results['lock']}", flush=True)
            continue
        if name == "rl_long":
            stage = stages["rl"]
            long_ref = tmp / "rl_long_reference"
            shutil.copytree(ref, long_ref, symlinks=True)
            (long_ref / "rl_long.yaml").write_text(json.dumps(RL_LONG))
            cmd = [*snakemake_cmd()[:-1], "rl_long.yaml", "--nolock"]
            subprocess.run([*cmd, *stage.targets, "--force"], cwd=long_ref, check=True, capture_output=True)
            # its steps take milliseconds: kill as soon as the step is logged
            rec = crash_and_rerun(stage, long_ref, tmp / name, cmd, kills=args.kills, seed=args.seed + i,
                                  step_delay=(0.0, 0.0))
            rec["stage"] = "rl_long"
        else:
            rec = crash_and_rerun(stages[name], ref, tmp / name, snakemake_cmd(), kills=args.kills,
                                  seed=args.seed + i)
        rec["wall_seconds"] = round(time.monotonic() - t, 1)
        for k in rec["kills"]:
            if not k.get("returncode"):
                k.pop("output_tail", None)
        results["stages"][name] = rec
        print(f"{name}: kills {sum(k['killed'] for k in rec['kills'])} (mid-job {rec['mid_job_kills']}), "
              f"matched {rec['matched']}, {rec.get('mismatched')}", flush=True)
    results["wall_seconds"] = round(time.monotonic() - t0, 1)
    if args.only and Path(args.out).exists():  # update those stages in the earlier results, keep the others
        earlier = json.loads(Path(args.out).read_text())
        earlier["stages"].update(results["stages"])
        earlier.update({k: v for k, v in results.items() if k not in ("stages", "wall_seconds", "reference_seconds")})
        results = earlier
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    shutil.rmtree(tmp, ignore_errors=True)


def print_table(results: dict) -> None:
    print("\n| stage | kills (mid-job) | reruns that started the job again | half-written outputs | rerun matched "
          "| resumed from | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results["stages"].items():
        # a run that was itself killed while a stage script ran did start the job again
        restarted = sum(k["job_started"] or (k["killed"] and k["job_alive_at_kill"]) for k in r["kills"]
                        if k["after_mid_job_kill"])
        after_kills = sum(k["after_mid_job_kill"] for k in r["kills"])
        resumed = r.get("resumed_from_step", "-")
        print(f"| {name} | {sum(k['killed'] for k in r['kills'])} ({r['mid_job_kills']}) | {restarted}/{after_kills} "
              f"| {len(r['half_written'])} | {'yes' if r['matched'] else 'NO: ' + '; '.join(r.get('mismatched', []))} "
              f"| {resumed} | {r['wall_seconds']} |")
    if results.get("lock"):
        print(f"\nlock probe: {results['lock']}")


if __name__ == "__main__":
    main()
