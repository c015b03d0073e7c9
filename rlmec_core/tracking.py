"""Experiment tracking: the figures every stage logs, sent to TensorBoard, Weights & Biases and/or MLflow.

Config ``tracking`` (default: no tracker)::

    tracking:
      report_to: [tensorboard, wandb, mlflow]   # any subset; [] = none
      project: rlmec                            # W&B project, MLflow experiment
      run_name: null                            # the pipeline run's group; null = config `run` (e.g. "demo")

One pipeline run is one *group* (``run_name``); every training stage and every evaluation is one tracker
*run* in it, named after the rule and its wildcards (``policy_bootstrap``, ``grm_train``, ``rl``,
``evaluate/sft/validation``, ``method_rl/rft/0.0001/1``, ...). A stage script publishes its settings in the
environment (``RLMEC_TRACKING``, :func:`to_env`), so that processes started by ``accelerate launch`` see
them too; ``rlmec_core.train.loop.train`` and :func:`log_once` read them when not given settings.
Training stages log each JSONL record of their log (loss parts, clip fraction, KL, grad norm, lr,
tokens/s, validation figures) at its optimizer step; evaluations log their accuracy. The trackers are
accelerate's (``accelerate.tracking``), opened on the main process only:

- TensorBoard: event files under ``results/<run>/tracking/tensorboard/<group>/<stage>/``;
- W&B: ``wandb.init(project=project, group=group, name=stage, dir=results/<run>/tracking)``; offline
  runs with ``WANDB_MODE=offline`` (``wandb sync`` uploads them later), credentials from ``WANDB_API_KEY``;
- MLflow: experiment ``project``, run ``<group>/<stage>`` tagged ``rlmec.group`` and ``rlmec.stage``, in
  ``$MLFLOW_TRACKING_URI`` or else a file store at ``results/<run>/tracking/mlruns``.

Only numbers are logged, and the run's configuration (hyperparameters of the stage, never environment
variables): no secret reaches a tracker (``tests/test_security.py`` scans the tracker files too).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRACKERS = ("tensorboard", "wandb", "mlflow")


@dataclass(frozen=True)
class TrackingSettings:
    """Where one stage's figures go (see the module docstring)."""

    report_to: tuple[str, ...] = ()
    project: str = "rlmec"
    group: str = "run"  # the pipeline run
    stage: str = "stage"  # this stage's tracker run
    logdir: str = "tracking"  # results/<run>/tracking
    config: Mapping[str, Any] = field(default_factory=dict)  # stored with the run (hyperparameters)

    def __post_init__(self) -> None:
        unknown = [t for t in self.report_to if t not in TRACKERS]
        if unknown:
            raise ValueError(f"tracking.report_to: unknown trackers {unknown}; choose from {list(TRACKERS)}")

    @property
    def enabled(self) -> bool:
        return bool(self.report_to)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, *, run: str, stage: str, results_dir: str | os.PathLike[str],
                    config: Mapping[str, Any] | None = None) -> TrackingSettings:
        """Settings of stage ``stage`` of pipeline run ``run`` from config ``tracking`` (None = no tracking);
        files go under ``results_dir/tracking``."""
        cfg = cfg or {}
        return cls(report_to=tuple(cfg.get("report_to") or ()), project=cfg.get("project") or "rlmec",
                   group=cfg.get("run_name") or run, stage=stage, logdir=str(Path(results_dir) / "tracking"),
                   config=dict(config or {}))


ENV = "RLMEC_TRACKING"  # the stage's settings as JSON: set by the stage script, inherited by launched processes


def to_env(settings: TrackingSettings | None) -> None:
    """Publish ``settings`` to this process and its children (``accelerate launch`` workers included)."""
    if settings is None or not settings.enabled:
        os.environ.pop(ENV, None)
        return
    os.environ[ENV] = json.dumps({"report_to": list(settings.report_to), "project": settings.project,
                                  "group": settings.group, "stage": settings.stage, "logdir": settings.logdir})


def from_env() -> TrackingSettings | None:
    """The settings a stage script published (None when tracking is off)."""
    raw = os.environ.get(ENV)
    if not raw:
        return None
    data = json.loads(raw)
    return TrackingSettings(report_to=tuple(data["report_to"]), project=data["project"], group=data["group"],
                            stage=data["stage"], logdir=data["logdir"])


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a log record (booleans, None, strings, lists and NaN/inf left out)."""
    out = {}
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def _flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config flattened to ``a.b`` keys with str/number/bool values (what every tracker accepts)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_config(value, f"{name}."))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[name] = value if value is not None else "null"
        else:
            out[name] = str(value)
    return out


class Trackers:
    """The trackers of one stage run: ``log(record, step)`` and ``close()`` (also a context manager).

    Open it on the main process only (training loops do). An empty ``report_to`` gives a no-op object.
    """

    def __init__(self, settings: TrackingSettings | None) -> None:
        self.settings = settings
        self._trackers: list[Any] = []
        if settings is None or not settings.enabled:
            return
        from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

        logdir = Path(settings.logdir)
        config = _flat_config({"stage": settings.stage, "group": settings.group, **settings.config})
        for name in settings.report_to:
            if name == "tensorboard":
                tracker = TensorBoardTracker(settings.stage, logdir / "tensorboard" / settings.group)
            elif name == "wandb":
                (logdir / "wandb").mkdir(parents=True, exist_ok=True)
                tracker = WandBTracker(settings.project, group=settings.group, name=settings.stage,
                                       dir=str(logdir), reinit="finish_previous")
            else:
                import mlflow

                if not os.environ.get("MLFLOW_TRACKING_URI"):
                    # a file store beside the run's other outputs (MLflow 3 keeps it in maintenance mode and
                    # wants an explicit opt-in); set MLFLOW_TRACKING_URI for a database or a server
                    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                    mlflow.set_tracking_uri((logdir / "mlruns").resolve().as_uri())
                tracker = MLflowTracker(settings.project, run_name=f"{settings.group}/{settings.stage}",
                                        tags={"rlmec.group": settings.group, "rlmec.stage": settings.stage})
            tracker.start()
            tracker.store_init_configuration(config)
            self._trackers.append(tracker)

    def log(self, record: Mapping[str, Any], step: int) -> None:
        values = scalars(record)
        if not values:
            return
        for tracker in self._trackers:
            tracker.log(values, step=step)

    def close(self) -> None:
        for tracker in self._trackers:
            tracker.finish()
        self._trackers = []

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def log_once(settings: TrackingSettings | None, values: Mapping[str, Any], step: int = 0) -> None:
    """One record as a run of its own (an evaluation's accuracy, a stage's summary); ``settings`` None: the
    stage's settings from the environment (:func:`from_env`), if any."""
    settings = settings if settings is not None else from_env()
    if settings is None or not settings.enabled:
        return
    with Trackers(settings) as trackers:
        trackers.log(values, step)


def read_tensorboard_scalars(run_dir: str | os.PathLike[str]) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of every event file under ``run_dir`` (later files win on a repeated step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for events in sorted(Path(run_dir).rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return out


__all__: Sequence[str] = ("ENV", "TRACKERS", "Trackers", "TrackingSettings", "from_env", "log_once",
                          "read_tensorboard_scalars", "scalars", "to_env")
