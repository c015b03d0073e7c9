"""Pre-flight checks (rlmec_core.preflight) on crafted inputs: the small-budget run of issue 20 stops, the demo
passes, every message names its figure and the key to change, malformed files name the file."""

from __future__ import annotations

import json

import pytest

from rlmec_core.config import validate_config
from rlmec_core.errors import DataError
from rlmec_core.preflight import (
    Check,
    PreflightError,
    enforce,
    grm_checks,
    label_checks,
    read_checks,
    run_preflight,
    update_check,
    update_check_from_log,
)

DEFAULTS = validate_config({})
GRM_DEFAULTS = {k: DEFAULTS["grm"][k] for k in ("min_rewrite_correct", "min_error_step_accuracy")}
LABEL_DEFAULTS = {k: DEFAULTS["label"][k] for k in ("min_wrong_samples", "min_wrong_reward_share")}

# figures of the demo's default run (results/demo/grm/quality.json, label/metrics.json)
DEMO_QUALITY = {"validation_wrong": 479, "rewrite_answer_correct": 0.0104, "error_step_accuracy": 0.739}
DEMO_LABELS = {"labelled": 3570, "labelled_wrong": 49, "reward_mass_correct": 58965.4, "reward_mass_wrong": 22.5}
# the small-budget run of issue 20: the GRM rewrote 9 of 537 wrong samples correctly
BAD_QUALITY = {"validation_wrong": 96, "rewrite_answer_correct": 0.0, "error_step_accuracy": 0.19}
BAD_LABELS = {"labelled": 636, "labelled_wrong": 9, "reward_mass_correct": 300.0, "reward_mass_wrong": 0.4}


def statuses(checks):
    return {c.name: c.status for c in checks}


def test_the_demo_passes_every_stopping_check_with_the_defaults():
    checks = (grm_checks(DEMO_QUALITY, **GRM_DEFAULTS, recommended=GRM_DEFAULTS)
              + label_checks(DEMO_LABELS, **LABEL_DEFAULTS, recommended=LABEL_DEFAULTS))
    assert statuses(checks) == {"grm_rewrite_correct": "green", "grm_error_step": "green",
                                "label_wrong_samples": "green", "label_wrong_reward_mass": "amber"}
    enforce(checks)  # amber warns, does not stop


def test_the_small_budget_run_stops_naming_the_grms_figures_and_the_keys(tmp_path):
    (tmp_path / "quality.json").write_text(json.dumps(BAD_QUALITY))
    (tmp_path / "labels.json").write_text(json.dumps(BAD_LABELS))
    with pytest.raises(PreflightError) as err:
        run_preflight(tmp_path / "labels.json", tmp_path / "checks.json", grm_quality_path=tmp_path / "quality.json",
                      grm_cfg=DEFAULTS["grm"], label_cfg=DEFAULTS["label"])
    text = str(err.value)
    for needle in ("0.0% of 96 held-out wrong predictions", "grm.min_rewrite_correct", "19.0%",
                   "grm.min_error_step_accuracy", "9 wrong samples", "label.min_wrong_samples"):
        assert needle in text, needle
    written = read_checks(tmp_path / "checks.json")  # written before stopping: the report can show it
    assert statuses(written)["grm_rewrite_correct"] == "red" and statuses(written)["label_wrong_samples"] == "red"
    assert [c.name for c in written if c.blocking] == ["grm_rewrite_correct", "grm_error_step", "label_wrong_samples"]


def test_lowered_thresholds_let_the_run_go_on_and_zero_turns_a_check_off(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps(BAD_LABELS))
    (tmp_path / "quality.json").write_text(json.dumps(BAD_QUALITY))
    checks = run_preflight(tmp_path / "labels.json", tmp_path / "checks.json", grm_quality_path=tmp_path / "quality.json",
                           grm_cfg={"min_rewrite_correct": 0, "min_error_step_accuracy": 0},
                           label_cfg={"min_wrong_samples": 5, "min_wrong_reward_share": 0.01})
    # the run goes on (nothing blocks) and the health panel stays red where the figure is below the defaults
    assert not any(c.blocking for c in checks)
    assert statuses(checks) == {"grm_rewrite_correct": "red", "grm_error_step": "red",
                                "label_wrong_samples": "red", "label_wrong_reward_mass": "amber"}
    grm = next(c for c in checks if c.name == "grm_rewrite_correct")
    assert "below the recommended 0.005 (grm.min_rewrite_correct was lowered to 0, so the run went on)" in grm.message
    assert grm.threshold == ">= 0.5%"
    assert read_checks(tmp_path / "checks.json") == checks
    # labels from the teacher's rewrites: no GRM check at all
    checks = run_preflight(tmp_path / "labels.json", tmp_path / "checks.json", grm_quality_path=None,
                           grm_cfg=DEFAULTS["grm"], label_cfg={"min_wrong_samples": 5, "min_wrong_reward_share": 0})
    assert [c.name for c in checks] == ["label_wrong_samples", "label_wrong_reward_mass"]


@pytest.mark.parametrize("wrong, status", [(19, "red"), (20, "green")])
def test_the_wrong_sample_count_is_compared_inclusively(wrong, status):
    labels = {**DEMO_LABELS, "labelled_wrong": wrong}
    assert statuses(label_checks(labels, min_wrong_samples=20, min_wrong_reward_share=0))["label_wrong_samples"] == status


def test_update_check_warns_beyond_noise_naming_the_learning_rate_and_steps():
    start, worse = {"accuracy": 0.719, "total": 500}, {"accuracy": 0.31, "total": 500}
    check = update_check(start, worse, lr=2e-3, steps=20)
    assert check.status == "amber" and not check.stops
    assert "the learning rate 0.002 over 20 optimizer steps" in check.message and "-40.9 pp" in check.figure
    # the demo: 51.4% -> 50.4% on 500 problems is within noise
    assert update_check({"accuracy": 0.514, "total": 500}, {"accuracy": 0.504, "total": 500}, lr=1e-5, steps=224).status == "green"
    # just past 1.96 standard errors (p = 0.5, n = 500 each: SE = 3.16 pp)
    assert update_check({"accuracy": 0.5, "total": 500}, {"accuracy": 0.437, "total": 500}, lr=1e-5, steps=1).status == "amber"
    assert update_check({"accuracy": 0.5, "total": 500}, {"accuracy": 0.44, "total": 500}, lr=1e-5, steps=1).status == "green"


def _log(*evals):
    """A training log: a loss record at every step, the (step, accuracy) evaluations on 500 problems."""
    records = [{"step": s, "loss": 1.0} for s in range(1, max(s for s, _ in evals) + 1)]
    for step, acc in evals:
        records.append({"step": step, "val_accuracy": acc, "val_total": 500.0})
    return sorted(records, key=lambda r: (r["step"], "val_accuracy" in r))


def test_update_check_from_the_rl_log_compares_its_start_and_last_evaluations():
    """The issue's run: 71.9% at the start, worse at every evaluation: amber, naming the lr and the steps, and
    saying that the best evaluation (the weights rl.select best keeps) was the starting one."""
    check = update_check_from_log(_log((0, 0.719), (10, 0.52), (20, 0.31)), lr=2e-3)
    assert check.status == "amber" and check.figure == "-40.9 pp (71.9% -> 31.0%)"
    assert "the learning rate 0.002 over 20 optimizer steps" in check.message
    assert "the best evaluation was step 0's (71.9%, the starting weights)" in check.message
    # better in the middle, back to the start at the end: green (within noise), the middle step named as best
    check = update_check_from_log(_log((0, 0.50), (10, 0.56), (20, 0.50)), lr=1e-5)
    assert check.status == "green" and "step 10's (56.0%)" in check.message
    # ties: the later evaluation is the kept one, as the training loop keeps it
    assert "step 20's" in update_check_from_log(_log((0, 0.5), (10, 0.5), (20, 0.5)), lr=1e-5).message
    # without a step-0 evaluation (rl.validation.at_start false) or with nothing after it: no check
    assert update_check_from_log(_log((10, 0.5), (20, 0.3)), lr=1e-5) is None
    assert update_check_from_log([{"step": 0, "val_accuracy": 0.5, "val_total": 500.0}], lr=1e-5) is None
    assert update_check_from_log([{"step": 1, "loss": 1.0}], lr=1e-5) is None


def test_malformed_inputs_name_the_file_and_key(tmp_path):
    with pytest.raises(DataError, match=r"q.json: 'error_step_accuracy' must be a number, got None"):
        grm_checks({**DEMO_QUALITY, "error_step_accuracy": None}, **GRM_DEFAULTS, where="q.json")
    with pytest.raises(DataError, match="labels.json: file not found"):
        run_preflight(tmp_path / "labels.json", tmp_path / "c.json", grm_quality_path=None, grm_cfg={}, label_cfg={})
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="bad.json: expected a JSON object"):
        read_checks(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"checks": [{"name": "x"}]}))
    with pytest.raises(DataError, match="other.json: not a pre-flight checks file"):
        read_checks(tmp_path / "other.json")
    with pytest.raises(ValueError, match="status must be one of"):
        Check("x", "blue", "", "", None, False, "")
    with pytest.raises(Exception, match="min_wrong_samples"):
        validate_config({"label": {"min_wrong_samples": -1}})
