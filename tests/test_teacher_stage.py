"""The teacher stage end to end: oracle in process, and the official openai / anthropic clients against a
real HTTP server on 127.0.0.1 (backed by the oracle) that injects faults and counts what it served."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_llm_server import FakeLLMServer, FaultPlan
from teacher_support import make_teacher_inputs, oracle_responder

from rlmec_core.config import validate_config
from rlmec_core.errors import ConfigError
from rlmec_core.schemas import REWRITE_STATUSES, REWRITES
from rlmec_core.stages.teacher import run_teacher

KEY_ENV = "RLMEC_TEST_TEACHER_KEY"
PLANTED_KEY = "sk-planted-0123456789-DO-NOT-LEAK"
CONTENT = ["sample_id", "sample_ids", "problem_id", "prediction", "error_step", "rewrite", "rewrite_correct",
           "edit_distance", "edit_ratio", "status"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_teacher_inputs(tmp_path_factory.mktemp("teacher_inputs"), 40, wrong_per_problem=2)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
    return PLANTED_KEY


def teacher_cfg(**overrides):
    retry = overrides.pop("retry", {"base_delay_s": 0.01, "max_delay_s": 0.05, "jitter": 0.0})
    return validate_config({"teacher": {"api_key_env": KEY_ENV, "model": "oracle-model", "timeout_s": 5,
                                        "retry": retry, **overrides}})["teacher"]


def run(inputs, out: Path, cfg, cache: Path | None = None):
    samples, problems, tokenizer = inputs
    metrics = run_teacher(samples, problems, tokenizer, out / "rewrites.parquet", out / "metrics.json",
                          adapter_name="arith", teacher_cfg=cfg, seed=0, cache_path=cache or out / "cache.jsonl")
    return metrics, pq.read_table(out / "rewrites.parquet")


def test_oracle_in_process(inputs, tmp_path):
    metrics, table = run(inputs, tmp_path, teacher_cfg(backend="oracle"))
    assert table.schema.equals(REWRITES)
    rows = table.to_pylist()
    assert len(rows) == metrics["distinct_predictions"] == 40 + metrics["sent_to_teacher"]
    wrong = [r for r in rows if not r["prediction_correct"]]
    assert all(r["status"] == "ok" and r["rewrite_correct"] for r in wrong)  # exact teacher: 100%
    assert all(r["error_step"] == -1 and r["rewrite"] == r["prediction"] for r in rows if r["prediction_correct"])
    assert metrics["mean_edit_ratio"] < metrics["mean_edit_ratio_replace_rest"]
    assert not (tmp_path / "cache.jsonl").exists()  # nothing paid for, nothing cached


def test_openai_over_http_matches_the_oracle_and_a_rerun_sends_nothing(inputs, tmp_path, api_key):
    _, reference = run(inputs, tmp_path / "oracle", teacher_cfg(backend="oracle"))
    with FakeLLMServer(oracle_responder) as server:
        cfg = teacher_cfg(backend="openai", base_url=server.base_url)
        metrics, table = run(inputs, tmp_path / "openai", cfg)
        served = server.counts
        assert table.select(CONTENT).equals(reference.select(CONTENT))
        assert metrics["requests_sent"] == served["requests"] == 2 * metrics["sent_to_teacher"]
        assert max(served["by_key"].values()) == 1  # identical predictions were sent once
        assert f"Bearer {api_key}" in server.seen_auth

        metrics2, table2 = run(inputs, tmp_path / "openai", cfg)  # same cache file
        assert server.counts["requests"] == served["requests"]  # the rerun paid for nothing
        assert metrics2["cache_hits"] == served["requests"] and metrics2["requests_sent"] == 0
        assert table2.equals(table)


def test_anthropic_over_http(inputs, tmp_path, api_key):
    _, reference = run(inputs, tmp_path / "oracle", teacher_cfg(backend="oracle"))
    with FakeLLMServer(oracle_responder) as server:
        cfg = teacher_cfg(backend="anthropic", base_url=server.anthropic_base_url)
        _, table = run(inputs, tmp_path / "anthropic", cfg)
    assert table.select(CONTENT).equals(reference.select(CONTENT))
    assert set(table.column("teacher_backend").to_pylist()) == {"anthropic", "passthrough"}


def test_faults_end_in_ok_or_a_recorded_status(inputs, tmp_path, api_key):
    plan = FaultPlan(rate_429=0.06, retry_after_s=0.01, rate_500=0.06, rate_hang=0.03, hang_s=3.0,
                     rate_malformed=0.03, rate_truncated=0.04, seed=7)
    with FakeLLMServer(oracle_responder, faults=plan) as server:
        cfg = teacher_cfg(backend="openai", base_url=server.base_url, timeout_s=0.5, max_in_flight=8,
                          retry={"base_delay_s": 0.01, "max_delay_s": 0.05, "jitter": 0.1, "max_attempts": 3,
                                 "truncated_retries": 1})
        metrics, table = run(inputs, tmp_path, cfg)
        counts = server.counts
    rows = table.to_pylist()
    assert len(rows) == metrics["distinct_predictions"]  # nothing lost
    assert len({r["sample_id"] for r in rows}) == len(rows)  # nothing duplicated
    assert {r["status"] for r in rows} <= set(REWRITE_STATUSES)
    for r in rows:
        if r["status"] != "ok":
            assert r["detail"], r
    assert sum(counts[f] for f in ("429", "500", "hang", "malformed", "truncated")) > 0
    assert metrics["retries"] > 0
    assert metrics["statuses"]["ok"] >= 0.8 * metrics["sent_to_teacher"]


def test_permanent_errors_are_not_retried(inputs, tmp_path, api_key):
    with FakeLLMServer(oracle_responder) as server:
        cfg = teacher_cfg(backend="openai", base_url=server.base_url + "/wrong-path")
        metrics, table = run(inputs, tmp_path, cfg)
        assert server.counts["requests"] == 0 and server.counts["not_found"] == metrics["sent_to_teacher"]
    failed = [r for r in table.to_pylist() if not r["prediction_correct"]]
    assert {r["status"] for r in failed} == {"api_error"}
    assert all(r["attempts"] == 1 and "HTTP 404" in r["detail"] for r in failed)


def test_the_key_is_read_from_the_environment_and_written_nowhere(inputs, tmp_path, api_key):
    log = tmp_path / "stage.log"
    import logging

    handler = logging.FileHandler(log)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        with FakeLLMServer(oracle_responder, faults=FaultPlan(rate_500=0.2, seed=1)) as server:
            cfg = teacher_cfg(backend="openai", base_url=server.base_url)
            run(inputs, tmp_path / "out", cfg)
            assert f"Bearer {api_key}" in server.seen_auth
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 4  # rewrites, metrics, cache, log
    for path in written:
        assert api_key.encode() not in path.read_bytes(), f"the API key leaked into {path}"


def test_missing_key_and_missing_model_are_config_errors(inputs, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"environment variable '{KEY_ENV}' is not set"):
        run(inputs, tmp_path, teacher_cfg(backend="openai", base_url="http://127.0.0.1:9/v1"))
    monkeypatch.setenv(KEY_ENV, "x")
    with pytest.raises(ConfigError, match="teacher.model"):
        run(inputs, tmp_path, teacher_cfg(backend="openai", model=None))
    assert os.environ[KEY_ENV] == "x"


@pytest.mark.slow
def test_killed_stage_resumes_without_paying_twice(inputs, tmp_path):
    """SIGKILL `rlmec teacher` mid-run; the rerun reads every cached reply and writes the same rows."""
    import signal
    import subprocess
    import sys
    import time

    samples, problems, tokenizer = inputs
    env = {**os.environ, KEY_ENV: "k"}
    rlmec = str(Path(sys.executable).with_name("rlmec"))

    def cmd(out, url):
        return [rlmec, "teacher", "--samples", str(samples), "--problems", str(problems), "--tokenizer",
                str(tokenizer), "--out", str(out), "--backend", "openai", "--model", "m", "--base-url", url,
                "--api-key-env", KEY_ENV, "--max-in-flight", "2"]

    with FakeLLMServer(oracle_responder) as server:
        subprocess.run(cmd(tmp_path / "ref", server.base_url), env=env, check=True, capture_output=True)
    with FakeLLMServer(oracle_responder, latency_s=0.05) as server:
        proc = subprocess.Popen(cmd(tmp_path / "run", server.base_url), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while server.counts["requests"] < 40 and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cache = (tmp_path / "run" / "cache_openai.jsonl").read_text().splitlines()
        cached = sum(1 for line in cache if line.endswith("}"))
        assert 0 < cached < 2 * 79
        assert not (tmp_path / "run" / "rewrites.parquet").exists()  # nothing half-written
        subprocess.run(cmd(tmp_path / "run", server.base_url), env=env, check=True, capture_output=True)
    metrics = __import__("json").loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["cache_hits"] == cached
    assert pq.read_table(tmp_path / "run" / "rewrites.parquet").equals(pq.read_table(tmp_path / "ref" / "rewrites.parquet"))
