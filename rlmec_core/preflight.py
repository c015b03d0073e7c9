"""Guard rails: checks between stages that say whether a run can be trusted, and stop one that cannot.

Each check compares one figure of a finished stage with a config threshold and gets a status:

- ``green``: within the threshold;
- ``amber``: a warning (the run goes on; the report's health panel shows it);
- ``red``: a stopping check is below its threshold. Below the configured one it *blocks*: :func:`enforce`
  raises :class:`PreflightError` before the RL update trains, with the figures and the keys to change. A
  user who wants to go on anyway lowers the key: the run goes on and the check stays red in the health
  panel as long as the figure is below the schema's default (the recommended bar).

The checks (config keys in brackets, defaults in ``config/schema.yaml``):

- ``grm_rewrite_correct`` [``grm.min_rewrite_correct``, stops]: the share of the GRM's two-step rewrites of
  held-out wrong predictions that reach the gold answer (``grm/quality.json``);
- ``grm_error_step`` [``grm.min_error_step_accuracy``, stops]: the share whose first wrong step the GRM finds;
- ``label_wrong_samples`` [``label.min_wrong_samples``, stops]: wrong samples left with a verified rewrite in
  the labels (count and share, ``label/metrics.json``): the only rows whose tokens the RL term penalises;
- ``label_wrong_reward_mass`` [``label.min_wrong_reward_share``, warns]: the share of the RL term's reward
  mass ``sum |r_t|`` on wrong samples; near zero, the update reinforces correct samples only (rejection-
  sampling fine-tuning in effect) and the token-level penalties carry no signal;
- ``update_vs_start`` [warns]: the updated policy's validation accuracy below the starting policy's beyond
  noise (the difference of two binomial proportions over 1.96 standard errors), naming the learning rate
  and the number of optimizer steps. From the RL stage's own log (:func:`update_check_from_log`: its
  step-0 evaluation of the starting weights against its last evaluation, the weights the schedule ended
  with, whichever weights ``rl.select`` kept), else from the evaluate stage's files.

The GRM checks apply when the labels come from the GRM (``label.rewrites: grm``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlmec_core.errors import DataError
from rlmec_core.io import write_json_atomic

STATUSES = ("green", "amber", "red")
# the label block's pre-flight thresholds: read by the RL stage, so they are not the label stage's parameters
LABEL_THRESHOLDS = ("min_wrong_samples", "min_wrong_reward_share")


class PreflightError(RuntimeError):
    """A stopping check failed; the message names its figure, threshold and config key."""


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # green | amber | red
    figure: str  # the measured value, as a reader sees it
    threshold: str  # what it is compared with
    key: str | None  # the config key of the threshold (None: the noise rule)
    stops: bool  # a stopping check: below its configured threshold it stops the run before the RL update
    message: str  # one sentence: what it means and, when not green, what to change
    blocking: bool = False  # it stops this run (below the configured threshold)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


def _number(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: {key!r} must be a number, got {value!r}")
    return float(value)


def _stopping_check(name: str, value: float, *, configured: float, recommended: float | None, key: str,
                    figure: str, shown, what: str, bad: str, fix: str) -> Check:
    """A stopping check. It stops the run when ``value < configured``; its colour is red below the stricter of
    the configured and the recommended (schema default) threshold, so a key lowered to let a run go on
    deliberately still shows red in the health panel."""
    bar = max(configured, recommended if recommended is not None else configured)
    blocking = value < configured
    if value >= bar:
        message = f"{what}."
    elif blocking:
        message = f"{what}, below {key} = {configured:g}: {bad}; {fix}, or lower {key} to go on anyway."
    else:
        message = (f"{what}, below the recommended {recommended:g} ({key} was lowered to {configured:g}, so the run "
                   f"went on): {bad}.")
    return Check(name, "red" if value < bar else "green", figure, f">= {shown(bar)}", key, True, message, blocking)


def grm_checks(quality: Mapping[str, Any], *, min_rewrite_correct: float, min_error_step_accuracy: float,
               recommended: Mapping[str, float] | None = None, where: str = "grm/quality.json") -> list[Check]:
    """The GRM's held-out rewrite answer-correct rate and first-error-step accuracy against their minimums
    (``recommended``: the schema's defaults, by key name, for the colour; see :func:`_stopping_check`)."""
    rec = recommended or {}
    n = int(_number(quality, "validation_wrong", where))
    correct = _number(quality, "rewrite_answer_correct", where)
    step = _number(quality, "error_step_accuracy", where)
    fix = ("train the GRM longer or on more teacher rewrites (grm.train, teacher.max_predictions), or use a "
           "larger GRM (grm.model)")
    return [
        _stopping_check("grm_rewrite_correct", correct, configured=min_rewrite_correct,
                        recommended=rec.get("min_rewrite_correct"), key="grm.min_rewrite_correct",
                        figure=f"{correct:.1%} of {n} held-out wrong predictions", shown=lambda x: f"{x:.1%}",
                        what=f"The GRM's rewrites reach the gold answer for {correct:.1%} of {n} held-out wrong predictions",
                        bad="it cannot rewrite the RL draw's errors into verified corrections, so almost no wrong "
                            "sample gets token labels", fix=fix),
        _stopping_check("grm_error_step", step, configured=min_error_step_accuracy,
                        recommended=rec.get("min_error_step_accuracy"), key="grm.min_error_step_accuracy",
                        figure=f"{step:.1%} of {n} held-out wrong predictions", shown=lambda x: f"{x:.1%}",
                        what=f"The GRM finds the first wrong step of {step:.1%} of {n} held-out wrong predictions",
                        bad="its token rewards would not penalise the wrong tokens", fix=fix),
    ]


def label_checks(metrics: Mapping[str, Any], *, min_wrong_samples: int, min_wrong_reward_share: float,
                 recommended: Mapping[str, float] | None = None, where: str = "label/metrics.json") -> list[Check]:
    """How many wrong samples the labels kept, and the share of the RL term's reward mass they carry."""
    rec = recommended or {}
    wrong = int(_number(metrics, "labelled_wrong", where))
    total = int(_number(metrics, "labelled", where))
    share = wrong / total if total else 0.0
    mass_wrong = _number(metrics, "reward_mass_wrong", where)
    mass_correct = _number(metrics, "reward_mass_correct", where)
    mass_share = mass_wrong / (mass_wrong + mass_correct) if mass_wrong + mass_correct > 0 else 0.0
    return [
        _stopping_check("label_wrong_samples", wrong, configured=min_wrong_samples,
                        recommended=rec.get("min_wrong_samples"), key="label.min_wrong_samples",
                        figure=f"{wrong:,} of {total:,} labelled samples ({share:.1%})", shown=lambda x: f"{int(x):,}",
                        what=f"The labels hold {wrong:,} wrong samples with a verified rewrite ({share:.1%} of {total:,})",
                        bad="the update would be imitation of correct samples with a handful of token penalties",
                        fix="draw more samples (sample.draws.rl, sample.n) or improve the GRM (see its checks)"),
        Check("label_wrong_reward_mass", "green" if mass_share >= min_wrong_reward_share else "amber",
              f"{mass_share:.2%} of sum |r_t| on wrong samples", f">= {min_wrong_reward_share:.2%}",
              "label.min_wrong_reward_share", False,
              f"Wrong samples carry {mass_share:.2%} of the RL term's reward mass"
              + ("." if mass_share >= min_wrong_reward_share else
                 ": the update mostly reinforces correct samples (rejection-sampling fine-tuning in effect) and "
                 "the token-level penalties carry little signal; compare it with rft and sft_gold (the compare target).")),
    ]


def update_check(start: Mapping[str, Any], updated: Mapping[str, Any], *, lr: float, steps: int | None,
                 where: str = "eval/*/validation/metrics.json", kept: str | None = None) -> Check:
    """The updated policy's validation accuracy against the starting policy's: amber when it is lower by more
    than 1.96 standard errors of the difference of two proportions, green otherwise. ``kept``: a sentence
    part saying which weights the stage saved (the in-training validation's choice), added to the message."""
    p0, n0 = _number(start, "accuracy", where), _number(start, "total", where)
    p1, n1 = _number(updated, "accuracy", where), _number(updated, "total", where)
    se = math.sqrt(p0 * (1 - p0) / max(n0, 1) + p1 * (1 - p1) / max(n1, 1))
    diff = p1 - p0
    below = diff < -1.96 * se
    steps_text = f"{steps} optimizer steps" if steps is not None else "its optimizer steps"
    return Check("update_vs_start", "amber" if below else "green",
                 f"{100 * diff:+.1f} pp ({p0:.1%} -> {p1:.1%})", f"> -{196 * se:.1f} pp (1.96 SE)", None, False,
                 f"The update moved validation accuracy by {100 * diff:+.1f} pp"
                 + (f", below the starting policy beyond noise: the learning rate {lr:g} over {steps_text} "
                    "made the model worse; lower rl.train.lr or rl.train.epochs, or pick them on validation "
                    "(compare.lr)" if below else " (within noise of the starting policy or above it)")
                 + (f"; {kept}." if kept else "."))


def update_check_from_log(records: Sequence[Mapping[str, Any]], *, lr: float,
                          where: str = "train_logs/rl.jsonl") -> Check | None:
    """:func:`update_check` of a training log with in-training validation: its step-0 record (the starting
    weights, ``rl.validation.at_start``) against its last record with ``val_accuracy`` (the weights the
    schedule ended with). None when the log has no step-0 evaluation or nothing after it. The message says
    which evaluated step had the best accuracy (the weights ``rl.select: best`` keeps)."""
    evals = [r for r in records if isinstance(r.get("val_accuracy"), (int, float))]
    start = next((r for r in evals if r.get("step") == 0), None)
    if start is None or evals[-1] is start:
        return None

    def figures(r: Mapping[str, Any]) -> dict[str, Any]:
        total = r.get("val_total")
        return {"accuracy": r["val_accuracy"], "total": total if isinstance(total, (int, float)) else 1}

    last = evals[-1]
    best = max(reversed(evals), key=lambda r: r["val_accuracy"])  # the later one on a tie, as the loop keeps it
    kept = (f"the best evaluation was step {best['step']}'s ({best['val_accuracy']:.1%}"
            + (", the starting weights)" if best["step"] == 0 else ")"))
    return update_check(figures(start), figures(last), lr=lr, steps=int(last["step"]), where=where, kept=kept)


def enforce(checks: Sequence[Check]) -> None:
    """Raise :class:`PreflightError` listing every check that blocks the run (their messages name the keys)."""
    failed = [c for c in checks if c.blocking]
    if failed:
        lines = "\n".join(f"- {c.name}: {c.message}" for c in failed)
        raise PreflightError(f"pre-flight checks stopped the run before the RL update:\n{lines}")


def run_preflight(label_metrics_path: str | Path, out_path: str | Path, *, grm_quality_path: str | Path | None,
                  grm_cfg: Mapping[str, Any], label_cfg: Mapping[str, Any]) -> list[Check]:
    """The checks of the label stage's output (and the GRM's quality when the GRM made the labels): written
    to ``out_path`` (JSON, every check, also the red ones), then :func:`enforce`."""
    from rlmec_core.config import validate_config

    defaults = validate_config({})  # the schema's thresholds: the health panel's colours
    checks: list[Check] = []
    if grm_quality_path is not None:
        checks += grm_checks(_read(grm_quality_path), min_rewrite_correct=float(grm_cfg["min_rewrite_correct"]),
                             min_error_step_accuracy=float(grm_cfg["min_error_step_accuracy"]),
                             recommended=defaults["grm"], where=str(grm_quality_path))
    checks += label_checks(_read(label_metrics_path), min_wrong_samples=int(label_cfg["min_wrong_samples"]),
                           min_wrong_reward_share=float(label_cfg["min_wrong_reward_share"]),
                           recommended=defaults["label"], where=str(label_metrics_path))
    write_json_atomic(out_path, {"checks": [asdict(c) for c in checks]})
    enforce(checks)
    return checks


def read_checks(path: str | Path) -> list[Check]:
    """The checks a :func:`run_preflight` wrote."""
    data = _read(path)
    try:
        return [Check(**c) for c in data["checks"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a pre-flight checks file ({exc})") from None


def _read(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


__all__ = ["Check", "LABEL_THRESHOLDS", "PreflightError", "STATUSES", "enforce", "grm_checks", "label_checks",
           "read_checks", "run_preflight", "update_check", "update_check_from_log"]
