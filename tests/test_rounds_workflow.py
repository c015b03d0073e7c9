"""Planning of iterative RLMEC (config `rounds`): which jobs each round adds, and the planning-time errors.

Dry runs only (`snakemake -n`); the smoke run with three rounds, killed in two rounds and resumed, is
tests/test_pipeline.py::test_three_rounds_resume_after_a_kill_in_any_round.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_pipeline import planned_jobs

REPO_ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("rounds")
    for item in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src = REPO_ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    return work


def dry_run(work: Path, layer: dict, *targets: str) -> subprocess.CompletedProcess:
    (work / "layer.yaml").write_text(yaml.safe_dump(layer))
    return subprocess.run([SNAKEMAKE, "-n", "--cores", "2", *targets, "--configfile", "config/smoke.yaml",
                           "layer.yaml"], cwd=work, capture_output=True, text=True)


def round_jobs(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k.startswith("round")}


def test_one_round_is_the_papers_pipeline(work):
    proc = dry_run(work, {})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert round_jobs(planned_jobs(proc.stdout)) == {}


def test_three_rounds_add_two_rounds_of_rlmec_and_sft_gold(work):
    """Rounds 2 and 3 of the default target: RLMEC (sample, GRM rewrite, label, update) and the step-matched
    sft_gold chain, each evaluated on the evaluated splits (smoke: test), and the table by round."""
    proc = dry_run(work, {"rounds": 3})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert round_jobs(planned_jobs(proc.stdout)) == {
        "round_sample": 2, "round_grm_rewrite": 2, "round_label": 2, "round_preflight": 2, "round_rl": 2,
        "round_sft_gold": 2, "round_evaluate": 4, "rounds_table": 1}
    assert "results/smoke/round3/policy/rlmec" in proc.stdout and "results/smoke/round2/label/rlmec/metrics.json" in proc.stdout


def test_the_grm_refresh_adds_the_teacher_and_a_further_trained_grm_per_round(work):
    proc = dry_run(work, {"rounds": 3, "grm": {"refresh": {"teacher_budget": 40}}})
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = round_jobs(planned_jobs(proc.stdout))
    for rule in ("round_teacher", "round_grm_data", "round_grm_train", "round_grm_eval", "round_grm_eval_stale"):
        assert counts[rule] == 2, rule
    assert "results/smoke/round3/grm/rlmec/model" in proc.stdout


def test_compare_runs_every_chain_of_every_round_method(work):
    """compare with rounds: each of rlmec, rft (iterated), grpo and sft_gold over the seeds trains rounds 2..N
    from its own policy; rlmec and rft sample their own policy each round; GRPO samples inside its trainer."""
    proc = dry_run(work, {"rounds": 3, "compare": {"seeds": [0, 1], "methods": ["sft", "rlmec"],
                                                    "sweep": {"methods": []}}}, "compare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = round_jobs(planned_jobs(proc.stdout))
    assert counts == {"round_sample": 8, "round_grm_rewrite": 4, "round_label": 4, "round_preflight": 4, "round_rl": 4,
                      "round_rft": 4, "round_grpo": 4, "round_sft_gold": 4, "round_evaluate": 16}
    # each round's RLMEC update waits on that round's pre-flight checks (its labels and the GRM that made them)
    assert "results/smoke/round3/checks/rlmec_lr0.001_s1/preflight.json" in proc.stdout
    assert planned_jobs(proc.stdout)["compare_rounds"] == 1


@pytest.mark.parametrize("layer, message", [
    ({"rounds": 6}, r"rounds=6: the rounds' fresh draws need 700 problems of the train split .* task.synth.n_train is 600"),
    ({"rounds": 2, "sample": {"draws": {"rl": {"first": 100, "problems": None}}}},
     r"rounds > 1 needs sample.draws.rl.problems"),
    ({"rounds": 0}, r"0 is less than the minimum of 1"),
    ({"grm": {"refresh": {"teacher_budget": 0}}}, r"0 is less than the minimum of 1"),
    ({"compare": {"rounds": {"methods": ["dpo"]}}}, r"'dpo' is not one of"),
])
def test_bad_rounds_settings_stop_at_planning_naming_the_key(work, layer, message):
    import re

    proc = dry_run(work, layer)
    assert proc.returncode != 0
    assert re.search(message, proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-3000:]
