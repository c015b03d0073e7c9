"""The smoke pipeline end to end through real Snakemake in a temporary directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from rlmec_core.schemas import GRM_DATA, PROBLEMS, REWRITES, SAMPLES, TOKEN_REWARDS

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), "--cores", "2", *args], cwd=cwd, capture_output=True, text=True)


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count} (without 'all' and 'total')."""
    lines = dry_run_output.split("Job stats:", 1)[1].splitlines()[3:]
    jobs = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    jobs.pop("all", None)
    return jobs


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("smoke")
    for item in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src = REPO_ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    # TensorBoard on for the smoke run (tracking settings are no rule's params: the tests that plan with
    # config/smoke.yaml alone still find nothing to do)
    (work / "tracking.yaml").write_text(yaml.safe_dump({"tracking": {"report_to": ["tensorboard"]}}))
    proc = snakemake(work, "--configfile", "config/smoke.yaml", "tracking.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return work, proc


def test_every_training_stage_and_evaluation_logs_to_tensorboard_what_its_logs_say(smoke_run):
    from rlmec_core.tracking import read_tensorboard_scalars, scalars

    work, _ = smoke_run
    run = work / "results" / "smoke"
    board = run / "tracking" / "tensorboard" / "smoke"
    stages = {"policy_bootstrap": "policy_sft", "grm_train": "grm", "rl": "rl", "sft_gold": "sft_gold"}
    for rule, log in stages.items():
        records = [json.loads(x) for x in (run / "train_logs" / f"{log}.jsonl").read_text().splitlines()]
        tb = read_tensorboard_scalars(board / rule)
        assert records and set(tb["loss"]) == {r["step"] for r in records if "loss" in r}, rule
        for record in records:
            for key, value in scalars(record).items():
                assert tb[key][record["step"]] == pytest.approx(value, rel=1e-6, abs=1e-9), (rule, key)
    evaluated = sorted(run.glob("eval/*/*/metrics.json"))
    assert {p.parent.parent.name for p in evaluated} == {"sft", "rlmec", "sft_gold"}
    for path in evaluated:
        policy, split = path.parent.parent.name, path.parent.name
        tb = read_tensorboard_scalars(board / "evaluate" / policy / split)
        assert tb["accuracy"] == {0: pytest.approx(json.loads(path.read_text())["accuracy"])}, (policy, split)
    stage_log = (run / "logs" / "rl.log").read_text()
    assert "stage rl done in" in stage_log and "wrote results/smoke/policy/rlmec" in stage_log


def test_smoke_pipeline_produces_every_artifact(smoke_run):
    work, proc = smoke_run
    for split in ("train", "validation", "test"):
        table = pq.read_table(work / "data" / "arith_smoke" / f"{split}.parquet")
        assert table.schema.equals(PROBLEMS)
        assert table.num_rows > 0
    model = work / "results" / "smoke" / "policy" / "sft"
    assert (model / "model.safetensors").exists() and (model / "config.json").exists()
    # the bootstrap validated as it trained (every epoch of 4) and kept the best evaluated checkpoint
    boot_log = [json.loads(x) for x in (work / "results" / "smoke" / "train_logs" / "policy_sft.jsonl").read_text().splitlines()]
    evaluated = [r for r in boot_log if "val_accuracy" in r]
    card = json.loads((model / "rlmec_model.json").read_text())
    assert len(evaluated) == card["evaluations"] == 4 and card["validation"]["problems"] == 40
    assert card["saved_step"] == card["best_step"] and card["best_metric"] == max(r["val_accuracy"] for r in evaluated)
    preds = pq.read_table(work / "results" / "smoke" / "eval" / "sft" / "test" / "predictions.parquet")
    assert preds.schema.equals(SAMPLES)
    metrics = json.loads((work / "results" / "smoke" / "eval" / "sft" / "test" / "metrics.json").read_text())
    assert metrics["total"] == preds.num_rows == 60
    assert metrics["ci_low"] <= metrics["accuracy"] <= metrics["ci_high"]
    assert metrics["correct"] == sum(preds.column("correct").to_pylist())
    samples = pq.read_table(work / "results" / "smoke" / "samples" / "sft" / "teacher.parquet")
    assert samples.schema.equals(SAMPLES) and samples.num_rows == 100 * 2  # sample.problems x sample.n
    rewrites = pq.read_table(work / "results" / "smoke" / "teacher" / "rewrites.parquet")
    assert rewrites.schema.equals(REWRITES)
    assert set(rewrites.column("status").to_pylist()) == {"ok"}  # the oracle is exact
    teacher = json.loads((work / "results" / "smoke" / "teacher" / "metrics.json").read_text())
    assert teacher["distinct_predictions"] == rewrites.num_rows
    grm = work / "results" / "smoke" / "grm"
    assert pq.read_table(grm / "data.parquet").schema.equals(GRM_DATA)
    assert (grm / "model" / "model.safetensors").exists()
    quality = json.loads((grm / "quality.json").read_text())
    assert 0.0 <= quality["error_step_accuracy"] <= 1.0 and 0.0 <= quality["token_flag_f1"] <= 1.0
    grm_rewrites = pq.read_table(grm / "rewrites.parquet")
    assert grm_rewrites.schema.equals(REWRITES)
    assert set(grm_rewrites.column("teacher_backend").to_pylist()) <= {"grm", "passthrough"}
    labels = pq.read_table(work / "results" / "smoke" / "label" / "token_rewards.parquet")
    assert labels.schema.equals(TOKEN_REWARDS) and labels.num_rows > 0
    label_metrics = json.loads((work / "results" / "smoke" / "label" / "metrics.json").read_text())
    assert label_metrics["labelled"] == labels.num_rows
    assert set(labels.column("rewrite_source").to_pylist()) <= {"grm", "passthrough"}
    rl_model = work / "results" / "smoke" / "policy" / "rlmec"
    assert (rl_model / "model.safetensors").exists()
    rl_log = [json.loads(x) for x in (work / "results" / "smoke" / "train_logs" / "rl.jsonl").read_text().splitlines()]
    assert rl_log and {"loss_rl", "loss_ir", "clip_frac", "approx_kl", "grad_norm"} <= set(rl_log[-1])
    # rl.validation: the starting policy (step 0) and every half epoch evaluated; the best evaluated weights saved
    rl_evals = [r for r in rl_log if "val_accuracy" in r]
    rl_card = json.loads((rl_model / "rlmec_model.json").read_text())
    assert rl_evals[0]["step"] == 0 and rl_evals[-1]["step"] == rl_card["steps"] >= 1  # the start, ..., the end
    best = max(reversed(rl_evals), key=lambda r: r["val_accuracy"])
    assert rl_card["saved_step"] == rl_card["best_step"] == best["step"] and rl_card["validation"]["select"] == "best"
    assert rl_card["update_check"]["name"] == "update_vs_start"
    grm_card = json.loads((grm / "model" / "rlmec_model.json").read_text())
    assert grm_card["validation"]["metric"] == "val_loss" and grm_card["saved_step"] == grm_card["best_step"]
    rl_eval = json.loads((work / "results" / "smoke" / "eval" / "rlmec" / "test" / "metrics.json").read_text())
    assert rl_eval["total"] == 60
    # sft_gold: the starting policy trained on the gold solutions of the rl draw's 100 problems
    gold_card = json.loads((work / "results" / "smoke" / "policy" / "sft_gold" / "rlmec_model.json").read_text())
    assert gold_card["method"] == "sft_gold" and gold_card["train_examples"] == 100
    assert gold_card["draw"] == {"first": 100, "problems": 100}
    assert gold_card["validation"]["select"] == "best" and gold_card["saved_step"] == gold_card["best_step"]
    gold_eval = json.loads((work / "results" / "smoke" / "eval" / "sft_gold" / "test" / "metrics.json").read_text())
    assert gold_eval["total"] == 60
    html = (work / "results" / "smoke" / "report.html").read_text()
    assert "RLMEC" in html and f"{100 * rl_eval['accuracy']:.1f}" in html
    assert "SFT-gold" in html and f"{100 * gold_eval['accuracy']:.1f}" in html
    assert (work / "results" / "smoke" / "summary.md").exists()
    assert list((work / "results" / "smoke" / "report_figures").glob("*.png"))
    for rule in ("data", "policy_bootstrap", "evaluate/sft_test", "sample/sft_teacher", "teacher", "grm_data",
                 "grm_train", "grm_eval", "grm_rewrite", "sample/sft_rl", "label", "preflight", "rl", "evaluate/rlmec_test",
                 "sft_gold", "evaluate/sft_gold_test", "report"):
        assert (work / "results" / "smoke" / "logs" / f"{rule}.log").stat().st_size > 0
        assert (work / "results" / "smoke" / "benchmarks" / f"{rule}.tsv").exists()
    summary = (proc.stdout + proc.stderr).split("greedy accuracy", 1)[1]  # the onsuccess summary
    assert [line.split()[0] for line in summary.splitlines()[1:4]] == ["sft", "sft_gold", "rlmec"]
    assert not list(work.rglob("*.tmp"))  # no temporaries left behind


def test_nothing_to_do_after_a_complete_run(smoke_run):
    work, _ = smoke_run
    proc = snakemake(work, "--configfile", "config/smoke.yaml", "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_eval_suite_on_slices_of_three_real_sets(smoke_run, shared_data):
    """`snakemake eval_suite`: the starting and the trained policy on slices of GSM8K (2-shot), ARC and SVAMP
    into one table; the default target stays untouched."""
    work, _ = smoke_run
    suite = {"eval_suite": {"policies": ["sft", "rlmec"], "max_new_tokens": 24, "tasks": [
        {"name": "gsm8k", "adapter": "gsm8k", "source": str(shared_data / "gsm8k" / "test.jsonl"), "limit": 8,
         "few_shot": 2},
        {"name": "arc", "adapter": "mcqa", "source": str(shared_data / "arc" / "test.jsonl"), "limit": 8},
        {"name": "svamp", "adapter": "svamp", "source": {"path": str(shared_data / "svamp" / "SVAMP.json")},
         "limit": 8}]}}
    (work / "suite.yaml").write_text(yaml.safe_dump(suite))
    proc = snakemake(work, "eval_suite", "--configfile", "config/smoke.yaml", "suite.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    table = json.loads((work / "results" / "smoke" / "eval_suite" / "table.json").read_text())
    assert table["sets"] == ["gsm8k", "arc", "svamp"] and table["policies"] == ["sft", "rlmec"]
    assert all(row[p]["total"] == 8 for row in table["rows"] for p in ("sft", "rlmec"))
    assert (work / "results" / "smoke" / "eval_suite" / "table.md").read_text().startswith("# Evaluation suite")
    for name in ("gsm8k", "arc", "svamp"):
        pq.read_table(work / "data" / "suite" / name / "test.parquet", schema=PROBLEMS)
        pq.read_table(work / "results" / "smoke" / "eval_suite" / "rlmec" / name / "predictions.parquet", schema=SAMPLES)
    again = snakemake(work, "--configfile", "config/smoke.yaml", "suite.yaml", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr  # the suite is not part of the default target


def test_changing_an_evaluation_setting_reruns_only_evaluation(smoke_run):
    work, _ = smoke_run
    cfg = yaml.safe_load((work / "config" / "smoke.yaml").read_text())
    cfg["evaluate"]["max_new_tokens"] = 40
    (work / "changed.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "--configfile", "changed.yaml", "-n")
    assert proc.returncode == 0, proc.stderr
    assert planned_jobs(proc.stdout + proc.stderr) == {"evaluate": 3, "report": 1}  # sft, sft_gold and rlmec


@pytest.mark.parametrize("key, value", [("clip_eps", 0.2), ("imitation_coef", 0.5), ("ratio_form", "ppo")])
def test_changing_an_rl_setting_reruns_only_rl_evaluate_and_report(smoke_run, key, value):
    work, _ = smoke_run
    cfg = yaml.safe_load((work / "config" / "smoke.yaml").read_text())
    cfg.setdefault("rl", {})[key] = value
    (work / "changed_rl.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "--configfile", "changed_rl.yaml", "-n")
    assert proc.returncode == 0, proc.stderr
    assert planned_jobs(proc.stdout + proc.stderr) == {"rl": 1, "evaluate": 1, "report": 1}


def test_changing_a_label_setting_reruns_from_label(smoke_run):
    work, _ = smoke_run
    cfg = yaml.safe_load((work / "config" / "smoke.yaml").read_text())
    cfg["label"] = {"neg_clip": [-0.2, 0.0]}
    (work / "changed_label.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "--configfile", "changed_label.yaml", "-n")
    assert proc.returncode == 0, proc.stderr
    # sft_gold takes as many optimizer steps as the RL update on the labels, so it follows them too
    assert planned_jobs(proc.stdout + proc.stderr) == {"label": 1, "preflight": 1, "rl": 1, "sft_gold": 1, "evaluate": 2,
                                                       "report": 1}


def test_inspect_a_labelled_sample_of_the_run(smoke_run):
    work, _ = smoke_run
    proc = subprocess.run([str(BIN / "rlmec"), "inspect", "results/smoke/label/token_rewards.parquet", "--row", "0",
                           "--no-color"], cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    first = pq.read_table(work / "results" / "smoke" / "label" / "token_rewards.parquet").slice(0, 1).to_pylist()[0]
    assert first["sample_id"] in proc.stdout


def test_the_grm_can_rewrite_the_teachers_draw_instead_of_a_fresh_one(smoke_run):
    work, _ = smoke_run
    cfg = yaml.safe_load((work / "config" / "smoke.yaml").read_text())
    cfg["grm"]["rewrite_draw"] = "teacher"
    (work / "same_draw.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "--configfile", "same_draw.yaml", "-n", "--forceall")
    assert proc.returncode == 0, proc.stderr
    jobs = planned_jobs(proc.stdout + proc.stderr)
    assert jobs["sample"] == 1  # only the teacher's draw is sampled
    assert "samples/sft/rl.parquet" not in proc.stdout


def test_three_rounds_resume_after_a_kill_in_any_round(smoke_run, tmp_path):
    """`rounds: 3` with the GRM refreshed, on top of the finished smoke run: killed in round 2 and again in
    round 3, each rerun finishes what was cut and redoes nothing that was done; round r samples fresh problems
    with the round r-1 policy, the GRM is trained further each round, sft_gold takes RLMEC's optimizer steps,
    and the report shows accuracy by round."""
    from killing import job_running, kill_group, start

    work = tmp_path / "work"
    shutil.copytree(smoke_run[0], work, symlinks=True)
    (work / "rounds3.yaml").write_text(yaml.safe_dump({"rounds": 3, "grm": {"refresh": {"teacher_budget": 40}}}))
    cmd = [str(BIN / "snakemake"), "--cores", "2", "--configfile", "config/smoke.yaml", "rounds3.yaml"]
    res = work / "results" / "smoke"
    round1 = (res / "policy" / "rlmec" / "model.safetensors").stat().st_mtime_ns

    def kill_in_round(r: int, marker: str) -> bool:
        """Run until round r's `marker` exists while a job runs, then SIGKILL everything; whether a job ran."""
        proc = start(cmd, work, log_path=tmp_path / f"kill{r}.log")
        deadline = time.monotonic() + 900
        while not ((res / f"round{r}" / marker).exists() and job_running(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / f"kill{r}.log").read_text()[-3000:]
            time.sleep(0.02)
        alive = kill_group(proc)
        # a killed Snakemake leaves its lock behind: `snakemake --unlock` once, as the README says
        subprocess.run([*cmd, "--unlock"], cwd=work, check=True, capture_output=True)
        return alive

    # in round 2 as it trains (its samples' job is complete: the labels that need them exist)
    assert kill_in_round(2, "label/rlmec/token_rewards.parquet")
    done_in_round2 = (res / "round2" / "samples" / "rlmec.parquet").stat().st_mtime_ns
    assert kill_in_round(3, "grm/rlmec/data.parquet")  # in round 3, as the GRM refresh trains (round 2 is done)
    round2_policy = (res / "round2" / "policy" / "rlmec" / "model.safetensors").stat().st_mtime_ns
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    # nothing finished before a kill ran again
    assert (res / "policy" / "rlmec" / "model.safetensors").stat().st_mtime_ns == round1
    assert (res / "round2" / "samples" / "rlmec.parquet").stat().st_mtime_ns == done_in_round2
    assert (res / "round2" / "policy" / "rlmec" / "model.safetensors").stat().st_mtime_ns == round2_policy

    train_ids = pq.read_table(work / "data" / "arith_smoke" / "train.parquet").column("id").to_pylist()
    for r in (2, 3):
        ids = set(pq.read_table(res / f"round{r}" / "samples" / "rlmec.parquet").column("problem_id").to_pylist())
        assert ids == set(train_ids[100 * r: 100 * (r + 1)]), r  # a fresh draw: rl's 100 problems shifted
        card = json.loads((res / f"round{r}" / "policy" / "rlmec" / "rlmec_model.json").read_text())
        assert card["init_model"] == ("results/smoke/policy/rlmec" if r == 2 else "results/smoke/round2/policy/rlmec")
        grm = json.loads((res / f"round{r}" / "grm" / "rlmec" / "model" / "rlmec_model.json").read_text())
        assert grm["init_model"] == ("results/smoke/grm/model" if r == 2 else "results/smoke/round2/grm/rlmec/model")
        gold = json.loads((res / f"round{r}" / "policy" / "sft_gold" / "rlmec_model.json").read_text())
        assert gold["steps"] == card["steps"] and gold["draw"] == {"first": 100 * r, "problems": 100}
    table = json.loads((res / "rounds" / "table.json").read_text())
    assert table["rounds"] == 3 and list(table["methods"]) == ["rlmec", "sft_gold"]
    assert [q["round"] for q in table["grm"]] == [2, 3]
    assert 'id="accuracy-by-round"' in (res / "report.html").read_text()
    again = subprocess.run([*cmd, "-n"], cwd=work, capture_output=True, text=True)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_compare_target_runs_every_method_on_the_same_samples(smoke_run):
    work, _ = smoke_run
    plan = snakemake(work, "compare", "-n", "--configfile", "config/smoke.yaml")
    assert plan.returncode == 0, plan.stderr
    jobs = planned_jobs(plan.stdout + plan.stderr)
    # 10 trained methods x 1 seed, the default target's rlmec and sft_gold runs reused; the teacher-rewrite
    # ablation needs its own labels; the lr sweep (instance_rl at 1e-3 = its compared run, and at 3e-4) adds one
    # training run and two validation evaluations
    assert jobs == {"label_teacher": 1, "method_rl": 8, "method_grpo": 1, "evaluate": 10, "compare_sweep": 1,
                    "compare_table": 1, "report_compare": 1, "compare": 1}
    proc = snakemake(work, "compare", "--configfile", "config/smoke.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    table = json.loads((work / "results" / "smoke" / "compare" / "table.json").read_text())
    methods = ["sft", "sft_gold", "rft", "instance_rl", "instance_rl_no_imitation", "dpo", "grpo", "rlmec",
               "rlmec_no_imitation", "rlmec_imitation_only", "rlmec_teacher_rewrites"]
    assert set(table["methods"]) == set(methods)
    main_table = (work / "results" / "smoke" / "compare" / "table.md").read_text().split("## Learning rates")[0]
    rows = [line.split("`")[1] for line in main_table.splitlines() if line.startswith("| `")]
    assert rows == methods  # the table keeps the configured order
    for name, m in table["methods"].items():
        assert 0.0 <= m["test_mean"] <= 1.0 and m["wrong_steps_per_solution"] is not None, name
    runs = {r["method"]: r for r in table["runs"]}
    assert runs["rlmec"]["policy"] == "rlmec" and runs["sft_gold"]["policy"] == "sft_gold"
    assert runs["instance_rl"]["policy"] == "instance_rl_lr0.001_s0"
    sweep = json.loads((work / "results" / "smoke" / "compare" / "sweep.json").read_text())["methods"]["instance_rl"]
    assert set(sweep["validation"]) == {"0.001", "0.0003"} and sweep["in_use"] == 1e-3
    assert sweep["policies"]["0.001"] == runs["instance_rl"]["policy"]  # the sweep's run is the compared run
    assert "Learning rates chosen on the validation split" in (work / "results" / "smoke" / "compare" / "table.md").read_text()
    assert all(runs[m]["tokens"] > 0 for m in runs if m != "sft")
    assert (work / "results" / "smoke" / "compare" / "table.md").read_text().startswith("# Methods compared")
    page = (work / "results" / "smoke" / "compare" / "report.html").read_text()
    assert page.index('id="methods-compared"') < page.index('id="accuracy"')  # the comparison is the main table
    assert "rlmec_teacher_rewrites" in page and "data:image/png;base64," in page
    again = snakemake(work, "--configfile", "config/smoke.yaml", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr  # the default target is untouched


def test_preflight_with_the_default_thresholds_stops_the_smoke_run_before_the_rl_update(smoke_run, tmp_path):
    """The smoke GRM and labels are far below the defaults (config/smoke.yaml lowers them): restored, the
    pre-flight job stops the run, its log naming the figures and the keys to change; the RL update (and the
    comparison's updates, which need the same checks) never start."""
    work, _ = smoke_run
    copy = tmp_path / "strict"
    shutil.copytree(work, copy, symlinks=True)
    defaults = {"grm": {"min_rewrite_correct": 0.005, "min_error_step_accuracy": 0.3}, "label": {"min_wrong_samples": 20}}
    (copy / "strict.yaml").write_text(yaml.safe_dump(defaults))
    plan = snakemake(copy, "--configfile", "config/smoke.yaml", "strict.yaml", "-n")
    assert "Nothing to be done" in plan.stdout + plan.stderr  # thresholds are not params: nothing reruns by itself
    res = copy / "results" / "smoke"
    shutil.rmtree(res / "policy" / "rlmec")
    (res / "logs" / "rl.log").unlink()
    proc = snakemake(copy, "--configfile", "config/smoke.yaml", "strict.yaml", "--forcerun", "preflight")
    assert proc.returncode != 0
    log = (res / "logs" / "preflight.log").read_text()
    assert "pre-flight checks stopped the run before the RL update" in log
    assert "- label_wrong_samples: The labels hold" in log and "below label.min_wrong_samples = 20" in log
    assert not (res / "logs" / "rl.log").exists() and not (res / "policy" / "rlmec").exists()  # never started
    assert not (res / "checks" / "preflight.json").exists()  # a failed check leaves no file that lets rl run
    assert "pre-flight checks stopped the run" in proc.stdout + proc.stderr  # shown by show-failed-logs
    # the comparison's updates need the same checks: planned again, each lists them as an input
    plan = snakemake(copy, "compare", "--configfile", "config/smoke.yaml", "strict.yaml", "-n", "--forcerun", "method_rl")
    assert planned_jobs(plan.stdout + plan.stderr)["preflight"] == 1
    blocks = [b for b in (plan.stdout + plan.stderr).split("\n\n") if "rule method_rl:" in b]
    assert blocks and all("results/smoke/checks/preflight.json" in b.split("output:")[0] for b in blocks)
