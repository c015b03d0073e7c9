"""Benchmarks of the teacher stage's robustness and throughput (issue 4), each against a real HTTP server.

The server is ``tests/fake_llm_server.py`` in its own process, speaking the OpenAI API and answering
like the oracle (``tests/teacher_support.py:oracle_responder``); the stage runs as ``rlmec teacher``
in its own process too, so it can be killed. Inputs are synthetic wrong solutions of demo problems.

1. faults:  2,000 wrong predictions (4,000 requests) with 20% of requests faulted (429 with
            Retry-After, 500, hangs past the client timeout, malformed JSON, truncated text): every row
            must end `ok` or with a recorded failure status; no row lost, none duplicated.
2. kill:    SIGKILL the stage part-way, rerun it: no request whose reply reached the cache is sent again
            (the rerun's cache hits vs the cache at the kill; the server's per-request counts show that only
            the requests in flight at the kill were served twice), and the final Parquet equals an
            uninterrupted run's.
3. flight:  8 requests in flight vs 1 against a server with 50 ms latency: throughput ratio (goal >= 6x).
4. oracle:  with ``--demo results/demo`` (after `snakemake`), the oracle's figures on the demo
            policy's own samples: answer-correct share and mean edit ratio vs replace-the-rest.

    .venv/bin/python benchmarks/bench_teacher.py [--only faults,kill,flight,oracle] [--demo results/demo]

Writes ``benchmarks/out/bench_teacher.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from teacher_support import make_teacher_inputs  # noqa: E402

BIN = Path(sys.executable).parent
KEY_ENV = "RLMEC_BENCH_KEY"
ENV = {**os.environ, KEY_ENV: "bench-key", "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}


class Server:
    """The fake LLM server in a subprocess."""

    def __init__(self, work: Path, *, latency: float = 0.0, faults: dict[str, float] | None = None, seed: int = 0):
        self.port_file, self.counts_file = work / "server.port", work / "server.counts.json"
        for f in (self.port_file, self.counts_file):
            f.unlink(missing_ok=True)
        args = [sys.executable, str(ROOT / "tests" / "fake_llm_server.py"), "--responder",
                "teacher_support:oracle_responder", "--port", "0", "--port-file", str(self.port_file),
                "--counts-path", str(self.counts_file), "--latency", str(latency), "--seed", str(seed)]
        for name, value in (faults or {}).items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        self.proc = subprocess.Popen(args, env=ENV)
        for _ in range(200):
            if self.port_file.exists() and self.port_file.read_text().strip():
                break
            time.sleep(0.05)
        self.base_url = f"http://127.0.0.1:{int(self.port_file.read_text())}/v1"

    def counts(self) -> dict:
        return json.loads(self.counts_file.read_text()) if self.counts_file.exists() else {"requests": 0, "by_key": {}}

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        return self.counts()


def stage_cmd(inputs, out: Path, base_url: str, in_flight: int, extra_cfg: Path | None = None) -> list[str]:
    samples, problems, tokenizer = inputs
    cmd = [str(BIN / "rlmec"), "teacher", "--samples", str(samples), "--problems", str(problems),
           "--tokenizer", str(tokenizer), "--out", str(out), "--backend", "openai", "--model", "oracle",
           "--base-url", base_url, "--api-key-env", KEY_ENV, "--max-in-flight", str(in_flight)]
    if extra_cfg:
        cmd += ["--config", str(extra_cfg)]
    return cmd


def run_stage(*args, **kwargs) -> tuple[float, dict]:
    out = args[1]
    t0 = time.monotonic()
    subprocess.run(stage_cmd(*args, **kwargs), env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0, json.loads((out / "metrics.json").read_text())


def config_file(work: Path, teacher: dict) -> Path:
    import yaml

    path = work / "teacher.yaml"
    path.write_text(yaml.safe_dump({"teacher": teacher}))
    return path


def bench_faults(work: Path) -> dict:
    inputs = make_teacher_inputs(work / "in", 2000, wrong_per_problem=1, correct_per_problem=0, seed=1)
    faults = {"rate_429": 0.05, "retry_after": 0.05, "rate_500": 0.05, "rate_hang": 0.03, "hang_s": 3.0,
              "rate_malformed": 0.03, "rate_truncated": 0.04}
    cfg = config_file(work, {"timeout_s": 1.0, "retry": {"base_delay_s": 0.05, "max_delay_s": 0.5, "max_attempts": 8}})
    server = Server(work, faults=faults, seed=11)
    try:
        seconds, metrics = run_stage(inputs, work / "out", server.base_url, 32, cfg)
    finally:
        counts = server.stop()
    rows = pq.read_table(work / "out" / "rewrites.parquet").to_pylist()
    n_sent = metrics["sent_to_teacher"]
    faulted = sum(counts[k] for k in ("429", "500", "hang", "malformed", "truncated"))
    result = {
        "predictions": n_sent,
        "requests_received": counts["requests"],
        "fault_share": faulted / counts["requests"],
        "faults": {k: counts[k] for k in ("429", "500", "hang", "malformed", "truncated")},
        "rows": len(rows),
        "rows_lost": n_sent - len(rows),
        "rows_duplicated": len(rows) - len({r["sample_id"] for r in rows}),
        "statuses": metrics["statuses"],
        "rows_without_a_final_status": sum(r["status"] not in metrics["statuses"] for r in rows),
        "retries": metrics["retries"],
        "seconds": round(seconds, 1),
    }
    print(f"faults: {n_sent} predictions, {counts['requests']} requests, {100 * result['fault_share']:.1f}% faulted "
          f"{result['faults']} -> statuses {metrics['statuses']}, lost {result['rows_lost']}, duplicated "
          f"{result['rows_duplicated']}", flush=True)
    return result


def bench_kill(work: Path) -> dict:
    inputs = make_teacher_inputs(work / "in", 600, wrong_per_problem=1, correct_per_problem=1, seed=2)
    # Uninterrupted reference run.
    (work / "ref").mkdir()
    server = Server(work / "ref", latency=0.02)
    try:
        run_stage(inputs, work / "ref", server.base_url, 8)
    finally:
        server.stop()
    reference = pq.read_table(work / "ref" / "rewrites.parquet")
    # Interrupted run: SIGKILL once about a quarter of the requests were served, then rerun to the end.
    (work / "kill").mkdir()
    server = Server(work / "kill", latency=0.02)
    try:
        proc = subprocess.Popen(stage_cmd(inputs, work / "kill", server.base_url, 8), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and server.counts()["requests"] < reference.num_rows // 2:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lines = (work / "kill" / "cache_openai.jsonl").read_text().splitlines()
        cached_at_kill = sum(1 for line in lines if line.endswith("}"))
        before = server.counts()
        _, rerun = run_stage(inputs, work / "kill", server.base_url, 8)
    finally:
        after = server.stop()
    final = pq.read_table(work / "kill" / "rewrites.parquet")
    twice = [k for k, n in after["by_key"].items() if n > 1]
    result = {
        "requests_before_kill": before["requests"],
        "replies_cached_at_kill": cached_at_kill,
        "rerun_cache_hits": rerun["cache_hits"],
        "cached_replies_sent_again": cached_at_kill - rerun["cache_hits"],
        "rerun_requests_sent": rerun["requests_sent"],
        "server_requests_after_kill": after["requests"] - before["requests"],
        "served_twice": len(twice),
        "same_rows_as_uninterrupted": final.equals(reference),
    }
    print(f"kill: SIGKILL after {before['requests']} requests with {cached_at_kill} replies cached; the rerun read "
          f"{rerun['cache_hits']} from the cache and sent {rerun['requests_sent']} (server saw "
          f"{result['server_requests_after_kill']}); cached replies sent again: {result['cached_replies_sent_again']}; "
          f"requests served twice: {len(twice)} (in flight at the kill, their replies never reached the client); "
          f"same rows as an uninterrupted run: {result['same_rows_as_uninterrupted']}", flush=True)
    return result


def bench_flight(work: Path) -> dict:
    inputs = make_teacher_inputs(work / "in", 200, wrong_per_problem=1, correct_per_problem=0, seed=3)
    times = {}
    for n in (1, 8):
        (work / f"f{n}").mkdir()
        server = Server(work / f"f{n}", latency=0.05)
        try:
            _, metrics = run_stage(inputs, work / f"f{n}", server.base_url, n)
        finally:
            server.stop()
        times[n] = (metrics["request_seconds"], metrics["requests_sent"])  # the request phase, not start-up
    rate = {n: req / s for n, (s, req) in times.items()}
    result = {"requests": times[1][1], "seconds_1": round(times[1][0], 2), "seconds_8": round(times[8][0], 2),
              "requests_per_s_1": round(rate[1], 1), "requests_per_s_8": round(rate[8], 1),
              "speedup": round(rate[8] / rate[1], 2)}
    print(f"flight: {times[1][1]} requests at 50 ms latency: 1 in flight {rate[1]:.1f} req/s, 8 in flight "
          f"{rate[8]:.1f} req/s -> {result['speedup']}x (goal >= 6x)", flush=True)
    return result


def bench_oracle(demo: Path) -> dict:
    metrics = json.loads((demo / "teacher" / "metrics.json").read_text())
    rows = pq.read_table(demo / "teacher" / "rewrites.parquet").to_pylist()
    wrong = [r for r in rows if not r["prediction_correct"]]
    result = {
        "wrong_predictions": len(wrong),
        "answer_correct_share": sum(bool(r["rewrite_correct"]) for r in wrong) / max(len(wrong), 1),
        "mean_edit_ratio": metrics["mean_edit_ratio"],
        "mean_edit_ratio_replace_rest": metrics["mean_edit_ratio_replace_rest"],
    }
    print(f"oracle on {demo}: {len(wrong)} wrong predictions, {100 * result['answer_correct_share']:.1f}% rewrites "
          f"answer-correct, mean edit ratio {result['mean_edit_ratio']:.3f} vs replace-the-rest "
          f"{result['mean_edit_ratio_replace_rest']:.3f}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="faults,kill,flight,oracle")
    parser.add_argument("--demo", default=str(ROOT / "results" / "demo"))
    args = parser.parse_args()
    parts = args.only.split(",")
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="rlmec-bench-teacher-") as tmp:
        work = Path(tmp)
        for name, fn in (("faults", bench_faults), ("kill", bench_kill), ("flight", bench_flight)):
            if name in parts:
                (work / name).mkdir()
                out[name] = fn(work / name)
    if "oracle" in parts:
        if (Path(args.demo) / "teacher" / "metrics.json").exists():
            out["oracle"] = bench_oracle(Path(args.demo))
        else:
            print(f"oracle: skipped ({args.demo}/teacher/metrics.json not found: run the demo first)")
    path = ROOT / "benchmarks" / "out" / "bench_teacher.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, **out}, indent=2) + "\n")  # --only updates its own parts
    print(f"-> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
