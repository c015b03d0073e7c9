"""Crash-and-rerun of every stage of the smoke pipeline through real Snakemake, and determinism.

One uninterrupted smoke run (through the RL update) is the reference. For each stage, a copy of it forces
that stage's job, SIGKILLs the whole Snakemake process group at seeded random points, reruns plain
`snakemake` and checks that the rerun started the job again (a killed job is never taken as complete), that
no output exists half-written under its final name after a kill, and that the final artefacts equal the
reference: identical bytes (data, grm_data) or rows (sample, teacher, grm_rewrite, label); for training
stages the run resumed from its last checkpoint, the published training log has the reference's steps
exactly once, and the losses match within 1e-3. The same procedure with more kills is
`benchmarks/bench_reliability.py` (docs/reliability.md quotes its numbers).

The engine is the transformers backend (`engine.backend: hf`): vLLM's CPU build is not promised bit-exact
across processes (docs/reliability.md), and the rows of a rerun must equal the reference's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from killing import crash_and_rerun, smoke_stages

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OVERRIDES = {"engine": {"backend": "hf"}}
# The kill points of the tests (the benchmark uses more). Deterministic stages: one kill each; training
# stages: two, so that a resumed run is itself killed and resumed again.
KILLS = {"policy_bootstrap": 2, "grm_train": 2, "rl": 2}
SEED = 20240


def copy_workflow(dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for item in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src = REPO_ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / item)
    (dst / "reliability.yaml").write_text(yaml.safe_dump(OVERRIDES))


def snakemake_cmd(cores: int = 2) -> list[str]:
    """Snakemake with the smoke config and the overrides; targets follow (after `--nolock`, not after the
    configfiles, which take every argument up to the next option). `--nolock`: a SIGKILLed Snakemake leaves
    its lock behind and the next run stops until `snakemake --unlock`; the benchmark checks that path, the
    tests skip it (the lock has nothing to do with which outputs are complete)."""
    return [str(BIN / "snakemake"), "--cores", str(cores), "--configfile", "config/smoke.yaml", "reliability.yaml",
            "--nolock"]


def reference_run(work: Path) -> Path:
    """The uninterrupted smoke pipeline through the RL update (every stage the crash tests kill)."""
    copy_workflow(work)
    stages = smoke_stages()
    targets = [t for s in stages for t in s.targets]
    proc = subprocess.run([*snakemake_cmd(), *targets], cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return work


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return reference_run(tmp_path_factory.mktemp("reliability") / "reference")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first one also waits for the module's reference run
@pytest.mark.parametrize("stage", smoke_stages(), ids=lambda s: s.name)
def test_killed_stage_reruns_to_the_uninterrupted_result(reference, tmp_path, stage):
    kills = KILLS.get(stage.name, 1)
    rec = crash_and_rerun(stage, reference, tmp_path / "work", snakemake_cmd(), kills=kills,
                          seed=SEED + len(stage.name), window=(0.05, 0.6))
    runs = rec["kills"]
    assert rec["completed"], runs[-1].get("output_tail")
    assert [r["killed"] for r in runs] == [True] * kills + [False], runs  # every planned kill landed
    assert rec["mid_job_kills"] == kills, runs  # ... while the job ran
    assert rec["half_written"] == [], rec["half_written"]  # no output half-written under its final name
    assert rec["rerun_skipped_killed_job"] == [], runs  # every rerun after a kill ran the job again
    assert rec["matched"], rec["mismatched"]
    if stage.checkpoint_dir:
        assert rec["logged_steps_ok"] and rec["resumed_from_step"] == rec["expected_resume"]


# -- determinism -----------------------------------------------------------------------------------------
def test_data_stage_is_byte_identical_across_processes(tmp_path):
    """Two `rlmec data build` processes with the same config and seed write the same bytes; another seed
    writes other problems."""
    rlmec = str(BIN / "rlmec")
    cfg = yaml.safe_load((REPO_ROOT / "config" / "smoke.yaml").read_text())
    paths = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        c = {**cfg, "seed": seed}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(c))
        subprocess.run([rlmec, "data", "build", "--config", str(tmp_path / f"{name}.yaml"), "--out-dir",
                        str(tmp_path / name)], check=True, capture_output=True)
        paths[name] = tmp_path / name
    for split in ("train", "validation", "test"):
        a, b, c = (paths[n] / f"{split}.parquet" for n in "abc")
        assert a.read_bytes() == b.read_bytes(), split
        assert pq.read_table(a).column("question") != pq.read_table(c).column("question"), split


def test_grm_data_is_byte_identical(tmp_path):
    from teacher_support import make_teacher_inputs

    from rlmec_core.config import validate_config
    from rlmec_core.stages.grm import build_grm_data
    from rlmec_core.stages.teacher import run_teacher

    samples, problems, tok = make_teacher_inputs(tmp_path / "in", 30, wrong_per_problem=2, seed=3)
    cfg = validate_config({})
    run_teacher(samples, problems, tok, tmp_path / "rw.parquet", tmp_path / "m.json", adapter_name="arith",
                teacher_cfg=cfg["teacher"], seed=0, cache_path=tmp_path / "c.jsonl")
    outs = []
    for name in ("a", "b"):
        build_grm_data(tmp_path / "rw.parquet", tmp_path / f"{name}.parquet", tmp_path / f"{name}.json",
                       adapter_name="arith", grm_cfg=cfg["grm"], seed=0)
        outs.append((tmp_path / f"{name}.parquet").read_bytes())
    assert outs[0] == outs[1]
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_hf_sampling_gives_identical_rows_in_two_processes(demo_policy, demo_task, tmp_path):
    """The transformers backend, seeded, in two fresh processes: identical Parquet rows (in-process
    repeatability is tests/test_sampling.py::test_hf_sampling_is_deterministic_and_has_the_schema)."""
    code = (
        "import sys\n"
        "from rlmec_core.sampling import EngineSettings, SampleSettings\n"
        "from rlmec_core.stages.sample import sample_policy\n"
        "sample_policy(sys.argv[1], sys.argv[2], sys.argv[3], adapter_name='arith', prompt_template=None,\n"
        "              settings=SampleSettings(n=2, temperature=1.0, top_p=0.95, max_new_tokens=32, seed=7),\n"
        "              engine=EngineSettings(backend='hf', hf_batch_size=16), first=0, limit=24)\n"
    )
    tables = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.parquet"
        subprocess.run([sys.executable, "-c", code, str(demo_policy), str(demo_task["test"]), str(out)], check=True,
                       capture_output=True)
        tables.append(pq.read_table(out))
    assert tables[0].num_rows == 48
    assert tables[0].to_pylist() == tables[1].to_pylist()
    assert len(set(tables[0].column("completion").to_pylist())) > 1  # it does sample
