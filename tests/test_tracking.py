"""Experiment tracking (rlmec_core.tracking): what the trackers receive equals the JSONL logs.

A short training run with TensorBoard, W&B (offline) and MLflow (a local file store) at once; each tracker's
own files are read back (TensorBoard's event files, MLflow's store through its client, W&B's offline
run file record by record) and compared with the run's JSONL log, record by record and key by key.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from test_train_loop import dataset, tiny_model

from rlmec_core.tracking import (
    ENV,
    Trackers,
    TrackingSettings,
    from_env,
    log_once,
    read_tensorboard_scalars,
    scalars,
    to_env,
)
from rlmec_core.train.loop import TrainSettings, train
from rlmec_core.train.sft import SFTCollator, sft_loss
from rlmec_core.workflow import tracker_run_name


def wandb_offline_history(run_dir: Path) -> list[dict]:
    """The history rows of a W&B offline run file (``run-*.wandb``): a 7-byte header (":W&B", magic, version)
    then LevelDB-log records (4-byte checksum, 2-byte length, 1-byte type: full/first/middle/last) in
    32 KiB blocks, each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("offline-run-*/run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, rows, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:  # zero padding at the end of a block or the file
            pos += block - pos % block
            continue
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.fixture()
def tracked_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(ENV, raising=False)
    settings = TrackingSettings(report_to=("tensorboard", "wandb", "mlflow"), project="rlmec-test", group="unit",
                                stage="sft", logdir=str(tmp_path / "tracking"), config={"note": "unit test"})
    log = tmp_path / "log.jsonl"
    train(tiny_model(), dataset(), SFTCollator(0), sft_loss,
          TrainSettings(epochs=2, lr=1e-3, batch_size=8, log_every=2, seed=0),
          checkpoint_dir=tmp_path / "ckpt", metrics_path=log, tracking=settings)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) >= 3
    return tmp_path / "tracking", records


def test_tensorboard_scalars_equal_the_jsonl_log(tracked_run):
    logdir, records = tracked_run
    tb = read_tensorboard_scalars(logdir / "tensorboard" / "unit" / "sft")
    for record in records:
        values = scalars(record)
        assert {"loss", "lr", "grad_norm", "tokens_per_s", "token_acc"} <= set(values)
        for key, value in values.items():
            assert tb[key][record["step"]] == pytest.approx(value, rel=1e-6, abs=1e-9), key  # float32 events
    assert set(tb["loss"]) == {r["step"] for r in records}


def test_mlflow_file_store_metrics_equal_the_jsonl_log(tracked_run):
    import mlflow

    logdir, records = tracked_run
    client = mlflow.tracking.MlflowClient((logdir / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("rlmec-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "unit/sft" and run.data.tags["rlmec.stage"] == "sft"
    assert run.data.params["lr"] == "0.001" and run.data.params["note"] == "unit test"
    for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert history == pytest.approx({r["step"]: r[key] for r in records}), key


def test_wandb_offline_history_equals_the_jsonl_log(tracked_run):
    logdir, records = tracked_run
    rows = [r for r in wandb_offline_history(logdir / "wandb") if "loss" in r]
    assert [r["_step"] for r in rows] == [r["step"] for r in records]
    for row, record in zip(rows, records, strict=True):
        for key, value in scalars(record).items():
            assert row[key] == pytest.approx(value), key


def test_settings_travel_through_the_environment_and_bad_names_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert from_env() is None
    settings = TrackingSettings.from_config({"report_to": ["tensorboard"], "run_name": None}, run="demo",
                                            stage="evaluate/sft/test", results_dir=tmp_path)
    assert settings.group == "demo" and settings.logdir == str(tmp_path / "tracking")
    to_env(settings)
    assert from_env() == TrackingSettings(("tensorboard",), "rlmec", "demo", "evaluate/sft/test", str(tmp_path / "tracking"))
    log_once(None, {"accuracy": 0.5, "n": 10, "label": "text is not logged", "ci": [0.4, 0.6]})
    tb = read_tensorboard_scalars(tmp_path / "tracking" / "tensorboard" / "demo" / "evaluate" / "sft" / "test")
    assert tb == {"accuracy": {0: 0.5}, "n": {0: 10.0}}
    to_env(TrackingSettings())  # tracking off: nothing published
    assert from_env() is None
    with pytest.raises(ValueError, match=r"tracking.report_to: unknown trackers \['neptune'\]"):
        TrackingSettings(report_to=("neptune",))
    with Trackers(None) as nothing:  # no trackers: logging is a no-op
        nothing.log({"loss": 1.0}, 1)
    assert tracker_run_name("method_rl", ["rft", "0.0001", "0"]) == "method_rl/rft/0.0001/0"
    assert tracker_run_name("rl", []) == "rl"


def test_grpo_trainer_callback_forwards_each_log_record_at_its_step():
    from types import SimpleNamespace

    from rlmec_core.stages.grpo import TrackerCallback

    class Recorder:
        def __init__(self):
            self.seen = []

        def log(self, record, step):
            self.seen.append((step, dict(record)))

    recorder = Recorder()
    callback = TrackerCallback(recorder)
    callback.on_log(None, SimpleNamespace(global_step=3, is_world_process_zero=True), None, logs={"loss": 0.5})
    callback.on_log(None, SimpleNamespace(global_step=4, is_world_process_zero=False), None, logs={"loss": 0.4})
    callback.on_log(None, SimpleNamespace(global_step=5, is_world_process_zero=True), None, logs=None)
    assert recorder.seen == [(3, {"loss": 0.5})]
