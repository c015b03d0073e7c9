"""Shared helpers of the kill-and-rerun tests (tests/test_reliability.py, benchmarks/bench_reliability.py).

A command is started in a new session (its own process group), so one ``os.killpg(SIGKILL)`` takes down
Snakemake and every job it spawned (stage scripts, tokenizer threads, engine workers) at once, the way a
pre-empted cluster job dies. The kill waits for a predicate (a file appears, a training log reaches a
step, a delay passes) polled every few milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

POLL_S = 0.01


@dataclass
class KillOutcome:
    """What happened to one started command."""

    killed: bool  # SIGKILL was sent while the command still ran
    returncode: int
    seconds: float  # from start to kill (or to its own exit)
    job_alive: bool  # a stage script (Snakemake ``script:`` job) of the group ran at the moment of the kill
    reason: str  # "predicate", "timeout" or "exited"
    output: str = ""  # the command's stdout + stderr (when it was captured)


def group_processes(pgid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live, non-zombie process of process group ``pgid`` (Linux /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            # fields after the parenthesised command name: state, ppid, pgrp, ...
            state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
            if int(pgrp) != pgid or state == "Z":
                continue
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        found.append((int(entry.name), cmd))
    return found


def job_running(pgid: int) -> bool:
    """Whether a Snakemake ``script:`` job (``.snakemake/scripts/tmp*.py``) runs in process group ``pgid``."""
    return any(".snakemake/scripts/" in cmd for _, cmd in group_processes(pgid))


def start(cmd: Sequence[str], cwd: str | os.PathLike[str], *, env: dict[str, str] | None = None,
          log_path: str | os.PathLike[str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new session (process group); output to ``log_path`` or discarded."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed by the child's exit)
    try:
        return subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        if log_path:
            out.close()


def kill_group(proc: subprocess.Popen, *, settle_s: float = 10.0) -> bool:
    """SIGKILL the whole process group of ``proc`` and wait until none of it is left; returns whether a
    job (stage script) was running at the moment of the kill."""
    pgid = proc.pid
    alive = job_running(pgid)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + settle_s
    while group_processes(pgid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    left = group_processes(pgid)
    if left:
        raise RuntimeError(f"processes survived SIGKILL of group {pgid}: {left}")
    return alive


def run_and_kill(cmd: Sequence[str], cwd: str | os.PathLike[str], predicate: Callable[[], bool], *,
                 timeout_s: float = 300.0, env: dict[str, str] | None = None,
                 log_path: str | os.PathLike[str] | None = None) -> KillOutcome:
    """Start ``cmd``; SIGKILL its process group as soon as ``predicate()`` holds (or after ``timeout_s``).

    If the command exits by itself first, nothing is killed (``killed`` False, its own return code).
    """
    t0 = time.monotonic()
    proc = start(cmd, cwd, env=env, log_path=log_path)
    reason = "exited"
    while proc.poll() is None:
        if predicate():
            reason = "predicate"
            break
        if time.monotonic() - t0 > timeout_s:
            reason = "timeout"
            break
        time.sleep(POLL_S)
    output = ""
    if proc.poll() is None:
        elapsed = time.monotonic() - t0
        alive = kill_group(proc)
        outcome = KillOutcome(True, proc.returncode, elapsed, alive, reason)
    else:
        outcome = KillOutcome(False, proc.returncode, time.monotonic() - t0, False, "exited")
    if log_path:
        output = Path(log_path).read_text(errors="replace")
    outcome.output = output
    return outcome


# -- predicates ------------------------------------------------------------------------------------------
def file_exists(path: str | os.PathLike[str]) -> Callable[[], bool]:
    p = Path(path)
    return p.exists


def script_started(work: str | os.PathLike[str], script: str) -> Callable[[], bool]:
    """True once Snakemake has written the job's script (``.snakemake/scripts/tmp*.<script>``) to start it."""
    scripts = Path(work) / ".snakemake" / "scripts"
    return lambda: any(scripts.glob(f"tmp*.{script}"))


def after(predicate: Callable[[], bool], delay_s: float) -> Callable[[], bool]:
    """True ``delay_s`` seconds after ``predicate`` first held."""
    first: list[float] = []

    def check() -> bool:
        if not first:
            if not predicate():
                return False
            first.append(time.monotonic())
        return time.monotonic() - first[0] >= delay_s

    return check


def jsonl_reaches(path: str | os.PathLike[str], step: int) -> Callable[[], bool]:
    """True once the JSONL training log at ``path`` holds a record with ``"step" >= step``."""
    p = Path(path)

    def check() -> bool:
        steps = jsonl_steps(p)  # once: the file may be rewritten between two reads
        return bool(steps) and steps[-1] >= step

    return check


# -- what a killed run left --------------------------------------------------------------------------------
def jsonl_steps(path: str | os.PathLike[str]) -> list[int]:
    """The ``step`` of every complete line of a JSONL training log (a line cut by the kill is ignored)."""
    p = Path(path)
    if not p.exists():
        return []
    steps = []
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            break
    return steps


def checkpoint_steps(checkpoint_dir: str | os.PathLike[str]) -> list[int]:
    """Steps of the complete checkpoints (``step-N`` with a ``trainer_state.json``), ascending."""
    d = Path(checkpoint_dir)
    if not d.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in d.glob("step-*") if (p / "trainer_state.json").exists())


# -- crash-and-rerun of one Snakemake stage ----------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    """One stage of the smoke pipeline as the crash-and-rerun procedure sees it (paths relative to the run's
    working directory)."""

    name: str
    targets: tuple[str, ...]  # what `snakemake` is asked to (re)build: the job's declared outputs
    log: str  # the job's log: (re)created when the job's script starts
    benchmark: str  # the job's benchmark file in the uninterrupted run (its wall time sets the kill window)
    compare: tuple[str, ...]  # artefacts that must equal the uninterrupted run's
    exact_bytes: bool = False  # compare bytes (else Parquet rows)
    checkpoint_dir: str | None = None  # training stages: resumable checkpoints (outside the outputs)
    train_log: str | None = None  # training stages: the published JSONL of per-step metrics
    live_log: str | None = None  # training stages: the JSONL as it is written during training
    model_dir: str | None = None  # training stages: the saved model (its card holds resumed_from_step)

    @property
    def script(self) -> str:
        """The rule's script (workflow/scripts/<script>): Snakemake copies it to .snakemake/scripts/ to start it."""
        return {"sample": "sample.py"}.get(self.name, f"{self.name}.py")


LIVE_LOG = "train_log.jsonl"  # rlmec_core.stages.policy.LIVE_LOG: the training log beside the checkpoints


def smoke_stages(run: str = "smoke", task: str = "arith_smoke") -> list[Stage]:
    """Every stage of config/smoke.yaml that makes an artefact another stage reads."""
    r, d = f"results/{run}", f"data/{task}"
    return [
        Stage("data", tuple(f"{d}/{s}.parquet" for s in ("train", "validation", "test")) + (f"{d}/stats.json",),
              f"{r}/logs/data.log", f"{r}/benchmarks/data.tsv",
              tuple(f"{d}/{s}.parquet" for s in ("train", "validation", "test")), exact_bytes=True),
        Stage("policy_bootstrap", (f"{r}/policy/sft",), f"{r}/logs/policy_bootstrap.log",
              f"{r}/benchmarks/policy_bootstrap.tsv", (), checkpoint_dir=f"{r}/checkpoints/policy_sft",
              train_log=f"{r}/train_logs/policy_sft.jsonl", live_log=f"{r}/checkpoints/policy_sft/{LIVE_LOG}",
              model_dir=f"{r}/policy/sft"),
        Stage("sample", (f"{r}/samples/sft/teacher.parquet",), f"{r}/logs/sample/sft_teacher.log",
              f"{r}/benchmarks/sample/sft_teacher.tsv", (f"{r}/samples/sft/teacher.parquet",)),
        Stage("teacher", (f"{r}/teacher/rewrites.parquet",), f"{r}/logs/teacher.log", f"{r}/benchmarks/teacher.tsv",
              (f"{r}/teacher/rewrites.parquet",)),
        Stage("grm_data", (f"{r}/grm/data.parquet",), f"{r}/logs/grm_data.log", f"{r}/benchmarks/grm_data.tsv",
              (f"{r}/grm/data.parquet",), exact_bytes=True),
        Stage("grm_train", (f"{r}/grm/model",), f"{r}/logs/grm_train.log", f"{r}/benchmarks/grm_train.tsv", (),
              checkpoint_dir=f"{r}/checkpoints/grm", train_log=f"{r}/train_logs/grm.jsonl",
              live_log=f"{r}/checkpoints/grm/{LIVE_LOG}", model_dir=f"{r}/grm/model"),
        Stage("grm_rewrite", (f"{r}/grm/rewrites.parquet",), f"{r}/logs/grm_rewrite.log",
              f"{r}/benchmarks/grm_rewrite.tsv", (f"{r}/grm/rewrites.parquet",)),
        Stage("label", (f"{r}/label/token_rewards.parquet",), f"{r}/logs/label.log", f"{r}/benchmarks/label.tsv",
              (f"{r}/label/token_rewards.parquet",)),
        Stage("rl", (f"{r}/policy/rlmec",), f"{r}/logs/rl.log", f"{r}/benchmarks/rl.tsv", (),
              checkpoint_dir=f"{r}/checkpoints/rl", train_log=f"{r}/train_logs/rl.jsonl",
              live_log=f"{r}/checkpoints/rl/{LIVE_LOG}", model_dir=f"{r}/policy/rlmec"),
    ]


def benchmark_seconds(path: str | os.PathLike[str]) -> float:
    """Wall seconds of a Snakemake ``benchmark:`` file (first column of its last line)."""
    return float(Path(path).read_text().splitlines()[-1].split("\t")[0])


def half_written(work: Path, stage: Stage) -> list[str]:
    """Declared outputs of ``stage`` that exist under their final name but are not complete artefacts: a
    Parquet file that does not read, a model directory without its weights, config or card."""
    import pyarrow.parquet as pq

    bad = []
    for rel in stage.targets:
        p = work / rel
        if not p.exists():
            continue
        if p.suffix == ".parquet":
            try:
                pq.read_table(p)
            except Exception as exc:  # noqa: BLE001 (any failure to read is the finding)
                bad.append(f"{rel}: {exc}")
        elif p.is_dir():
            missing = [n for n in ("model.safetensors", "config.json", "rlmec_model.json") if not (p / n).exists()]
            if missing:
                bad.append(f"{rel}: missing {missing}")
        elif p.suffix == ".json":
            try:
                json.loads(p.read_text())
            except ValueError as exc:
                bad.append(f"{rel}: {exc}")
    return bad


def same_artefact(a: Path, b: Path, exact_bytes: bool) -> bool:
    import pyarrow.parquet as pq

    if exact_bytes:
        return a.read_bytes() == b.read_bytes()
    return pq.read_table(a).equals(pq.read_table(b))


def crash_and_rerun(stage: Stage, ref: Path, work: Path, snakemake_cmd: Sequence[str], *, kills: int, seed: int,
                    loss_tol: float = 1e-3, job_timeout_s: float = 600.0,
                    window: tuple[float, float] = (0.05, 0.9), step_delay: tuple[float, float] = (0.0, 0.5)) -> dict:
    """Kill ``stage``'s job ``kills`` times at seeded random points, then let it finish; compare with ``ref``.

    ``work`` is made as a copy of ``ref`` (a finished run, ``.snakemake/`` included). The first run forces the
    job (``--force``); each later run is a plain rerun of the same targets, which must start the job again
    (a killed job's outputs are incomplete) and is itself killed, until the last one runs to the end.
    Deterministic stages are killed a random fraction (in ``window``) of the job's reference wall time after
    Snakemake started the job's script; training stages once their live training log passes a random step (plus up to half a second),
    so that kills land between checkpoints (``step_delay``: the extra delay's range). Returns a record of every kill and of the checks (the caller
    asserts on it).
    """
    import random
    import shutil

    rng = random.Random(seed)
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(ref, work, symlinks=True)
    job_s = benchmark_seconds(ref / stage.benchmark)
    ref_steps = jsonl_steps(ref / stage.train_log) if stage.train_log else []
    # training stages: kill after distinct logged steps (more kills than steps: the rest by time, as below)
    kill_steps = sorted(rng.sample(ref_steps[:-1], min(kills, len(ref_steps) - 1))) if ref_steps else []
    record: dict = {"stage": stage.name, "kills": [], "reference_job_seconds": job_s}
    log = work / stage.log
    previous_mid_job = False
    for i in range(kills + 1):
        log.unlink(missing_ok=True)
        for stale in (work / ".snakemake" / "scripts").glob("tmp*.py"):  # a killed job's copy stays behind
            stale.unlink()
        final = i == kills
        cmd = [*snakemake_cmd, *stage.targets, *(["--force"] if i == 0 else [])]
        if final:
            predicate: Callable[[], bool] = lambda: False  # noqa: E731
        elif i < len(kill_steps):  # a training stage: once this run's job has logged the step
            started, reached = script_started(work, stage.script), jsonl_reaches(work / stage.live_log, kill_steps[i])
            predicate = after(lambda s=started, r=reached: s() and r(), rng.uniform(*step_delay))
        else:  # a fraction of the job's reference wall time after Snakemake started the job's script
            predicate = after(script_started(work, stage.script), rng.uniform(*window) * job_s)
        out = run_and_kill(cmd, work, predicate, timeout_s=job_timeout_s, log_path=work / f".kill_run_{i}.log")
        entry = {"run": i, "killed": out.killed, "job_alive_at_kill": out.job_alive, "seconds": round(out.seconds, 2),
                 "returncode": out.returncode,
                 # the run started the job (the kill predicate saw its script or its training log, or the job
                 # created its log): a killed job is never taken as complete
                 "job_started": log.exists() or (out.killed and out.reason == "predicate"),
                 "after_mid_job_kill": previous_mid_job}
        if out.killed:
            entry["half_written"] = half_written(work, stage)
            if stage.checkpoint_dir:
                entry["checkpoints"] = checkpoint_steps(work / stage.checkpoint_dir)
        else:
            entry["output_tail"] = out.output[-3000:] if out.returncode else ""
        record["kills"].append(entry)
        previous_mid_job = out.killed and out.job_alive
        if not out.killed and not final and out.returncode != 0:
            break
    last = record["kills"][-1]
    record["completed"] = not last["killed"] and last["returncode"] == 0
    record["mid_job_kills"] = sum(k["killed"] and k["job_alive_at_kill"] for k in record["kills"])
    record["half_written"] = [h for k in record["kills"] for h in k.get("half_written", [])]
    record["rerun_skipped_killed_job"] = [k["run"] for k in record["kills"] if k["after_mid_job_kill"] and not k["job_started"]]
    if not record["completed"]:
        record["matched"] = False
        return record
    mismatched = [rel for rel in stage.compare if not same_artefact(work / rel, ref / rel, stage.exact_bytes)]
    if stage.train_log:
        steps = jsonl_steps(work / stage.train_log)
        card = json.loads((work / stage.model_dir / "rlmec_model.json").read_text())
        ckpts = [k["checkpoints"] for k in record["kills"] if k.get("checkpoints") is not None]
        expected_resume = ckpts[-1][-1] if ckpts and ckpts[-1] else 0
        # the records of optimizer steps (a step-0 validation record has no loss)
        ref_records = [r for r in map(json.loads, (ref / stage.train_log).read_text().splitlines()) if "loss" in r]
        records = [r for r in map(json.loads, (work / stage.train_log).read_text().splitlines()) if "loss" in r]
        loss_diff = max((abs(a["loss"] - b["loss"]) for a, b in zip(records, ref_records, strict=False)), default=0.0)
        record.update(logged_steps_ok=steps == ref_steps and len(set(steps)) == len(steps),
                      resumed_from_step=card.get("resumed_from_step"), expected_resume=expected_resume,
                      final_loss=records[-1]["loss"] if records else None, reference_final_loss=ref_records[-1]["loss"],
                      max_loss_diff=loss_diff)
        if not record["logged_steps_ok"]:
            mismatched.append(f"{stage.train_log}: steps {steps} != {ref_steps}")
        if card.get("resumed_from_step") != expected_resume:
            mismatched.append(f"resumed from step {card.get('resumed_from_step')}, last checkpoint {expected_resume}")
        if loss_diff > loss_tol * max(1.0, abs(ref_records[-1]["loss"])):
            mismatched.append(f"loss differs from the uninterrupted run by {loss_diff:.2e}")
    leftovers = [str(p.relative_to(work)) for p in work.rglob("*.tmp") if "checkpoints" not in p.parts]
    if leftovers:
        mismatched.append(f"temporaries left behind: {leftovers}")
    record["mismatched"] = mismatched
    record["matched"] = not mismatched
    return record
