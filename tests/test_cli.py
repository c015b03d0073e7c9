"""The `rlmec` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from rlmec_core.schemas import PROBLEMS, SAMPLES

RLMEC = str(Path(sys.executable).with_name("rlmec"))


def rlmec(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([RLMEC, *args], capture_output=True, text=True, cwd=cwd)


def test_data_synth_any_seed_is_reproducible(tmp_path):
    a, b, c = (tmp_path / f"{n}.parquet" for n in "abc")
    for out, seed in ((a, "11"), (b, "11"), (c, "12")):
        proc = rlmec("data", "synth", "--n", "40", "--seed", seed, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    ta, tb, tc = (pq.read_table(p) for p in (a, b, c))
    assert ta.schema.equals(PROBLEMS) and ta.num_rows == 40
    assert ta.equals(tb)
    assert ta.column("question").to_pylist() != tc.column("question").to_pylist()


def test_evaluate_command(tmp_path, demo_policy, demo_task):
    out = tmp_path / "eval"
    proc = rlmec("evaluate", "--model", str(demo_policy), "--data", str(demo_task["test"]), "--out", str(out),
                 "--backend", "hf", "--limit", "20")
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "CI" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["total"] == 20 and metrics["backend"] == "hf"
    assert pq.read_table(out / "predictions.parquet").schema.equals(SAMPLES)


def test_errors_are_reported_without_a_traceback(tmp_path):
    proc = rlmec("evaluate", "--model", str(tmp_path), "--data", str(tmp_path / "missing.parquet"), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "missing.parquet: file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rft_on_a_missing_samples_file_names_it(tmp_path):
    proc = rlmec("rft", "--samples", str(tmp_path / "samples.parquet"), "--policy", str(tmp_path), "--out",
                 str(tmp_path / "out"))
    assert proc.returncode == 2 and "samples.parquet: file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_command_has_help():
    for cmd in (["data", "synth"], ["data", "build"], ["policy"], ["sample"], ["evaluate"], ["sft-gold"], ["rft"]):
        proc = rlmec(*cmd, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout
