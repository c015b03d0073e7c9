"""A teacher served by vLLM, for real: the path of a user without an API budget.

vLLM's OpenAI-compatible server is started on 127.0.0.1 with a tiny LLaMA the test builds itself (no
model hub), and the teacher stage runs against it through the ``rlmec teacher`` command line with
``teacher.backend: openai`` and ``teacher.base_url``. The tiny model's replies are junk, so what is
checked is the path, not the quality: every request reaches the server and is answered (server log,
token counts in the metrics), every row gets a status, junk replies are recorded as the stage defines
(``parse_error`` / ``wrong_answer``), a rerun is answered from the cache, and the output is valid Parquet.

Commands, as a user would type them (``vllm serve`` is the same server; on this CPU build the ``vllm``
console script cannot find its package metadata, so the module is started directly)::

    python -m vllm.entrypoints.openai.api_server --model DIR --host 127.0.0.1 --port N \\
        --served-model-name tiny-teacher --chat-template tests/served_teacher_chat_template.jinja

The tiny tokenizer has no chat template and vLLM's ``/v1/chat/completions`` (the route the ``openai``
backend uses) refuses to guess one: the test passes ``--chat-template``; instruct models ship their own.
The second test serves the model without one and checks that the stage records ``api_error`` rows
whose detail carries the server's explanation, sent once each (a 400 is not retried).

The API key: the backend reads it from the variable named by ``teacher.api_key_env``; the server is
started with ``VLLM_API_KEY`` (the same dummy value) so it rejects requests without it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from teacher_support import make_teacher_inputs

from rlmec_core.io import read_parquet, write_parquet
from rlmec_core.sampling import CPU_VLLM_ENV, vllm_available
from rlmec_core.schemas import REWRITE_STATUSES, REWRITES, SAMPLES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed (the served teacher needs its server)"),
]

RLMEC = str(Path(sys.executable).with_name("rlmec"))
CHAT_TEMPLATE = Path(__file__).with_name("served_teacher_chat_template.jinja")
SERVED_NAME = "tiny-teacher"
KEY_ENV = "RLMEC_SERVED_TEACHER_KEY"
DUMMY_KEY = "dummy-local-key"  # a local vLLM server needs no real key; any non-empty value will do
MAX_MODEL_LEN = 2048  # the completion prompt (with its one-shot exemplar) is ~1.3k tokens of this tokenizer
READY_TIMEOUT_S = 300.0


# -- inputs and the tiny model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Teacher inputs: 6 problems, each with a wrong and a correct prediction, plus one empty wrong
    prediction (it skips the first-error question, so the completion request is always sent too)."""
    samples, problems, tokenizer = make_teacher_inputs(tmp_path_factory.mktemp("served_inputs"), 6)
    rows = read_parquet(samples, SAMPLES).to_pylist()
    empty = {**rows[0], "sample_id": rows[0]["problem_id"] + "#empty", "sample_index": 99, "completion": "",
             "pred_answer": "", "correct": False}
    write_parquet(pa.Table.from_pylist([*rows, empty], schema=SAMPLES), samples, SAMPLES)
    return samples, problems, tokenizer


@pytest.fixture(scope="module")
def tiny_model(inputs, tmp_path_factory) -> Path:
    """An untrained tiny LLaMA with the inputs' tokenizer, saved as a model directory vLLM loads."""
    from transformers import AutoTokenizer

    from rlmec_core.models.tiny import TinyArch, build_tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(str(inputs[2]))
    arch = TinyArch(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=2, max_position_embeddings=MAX_MODEL_LEN)
    out = tmp_path_factory.mktemp("served_model")
    build_tiny_llama(tokenizer, arch, seed=0).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    assert not getattr(tokenizer, "chat_template", None), "the tiny tokenizer was expected to have no chat template"
    return out


# -- the server ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: Path, n: int = 60) -> str:
    if not log.exists():
        return "(no server log)"
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its own session: the server and any engine process it
    started), then SIGKILL whatever is left after 30 s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, even after a clean exit
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@contextmanager
def vllm_server(model: Path, log: Path, *, chat_template: Path | None) -> Iterator[str]:
    """vLLM's OpenAI-compatible server on a free port of 127.0.0.1; yields its base URL (``.../v1``)."""
    import torch

    port = _free_port()
    env = dict(os.environ)
    env["VLLM_API_KEY"] = DUMMY_KEY  # the server requires this bearer token
    for var, value in {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}.items():
        env.setdefault(var, value)
    if not torch.cuda.is_available():
        # As rlmec_core.sampling does for its engines on a CPU (the engine in the server's process starts
        # in ~15 s instead of ~25 s on 2 cores), and a 1 GiB KV cache instead of a share of the RAM.
        for var, value in {**CPU_VLLM_ENV, "VLLM_CPU_KVCACHE_SPACE": "1"}.items():
            env.setdefault(var, value)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED_NAME,
           "--max-model-len", str(MAX_MODEL_LEN), "--dtype", "float32", "--enforce-eager",
           "--gpu-memory-utilization", "0.2", "--seed", "0"]
    if chat_template is not None:
        cmd += ["--chat-template", str(chat_template)]
    base_url = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    try:
        _wait_ready(proc, base_url, log)
        yield base_url
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen, base_url: str, log: Path) -> None:
    """Poll ``GET /v1/models`` until it lists the served model; fail with the log's tail otherwise."""
    t0 = time.monotonic()
    request = urllib.request.Request(base_url + "/models", headers={"Authorization": f"Bearer {DUMMY_KEY}"})
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the vLLM server exited with code {proc.returncode} before it was ready; "
                        f"log tail ({log}):\n{_tail(log)}")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                if resp.status == 200 and SERVED_NAME.encode() in resp.read():
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() - t0 > READY_TIMEOUT_S:
            pytest.fail(f"the vLLM server did not answer GET {base_url}/models within {READY_TIMEOUT_S:.0f} s; "
                        f"log tail ({log}):\n{_tail(log)}")
        time.sleep(0.5)


def _chat_posts(log: Path, status: int = 200) -> int:
    """Requests the server answered on /v1/chat/completions with ``status`` (its access log)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    return sum(1 for line in text.splitlines() if f'"POST /v1/chat/completions HTTP/1.1" {status}' in line)


def _unauthenticated_status(base_url: str) -> int:
    request = urllib.request.Request(base_url + "/chat/completions", method="POST",
                                     data=b'{"model": "tiny-teacher", "messages": []}',
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


# -- the stage through the command line ----------------------------------------------------------------
def _config(path: Path, base_url: str) -> Path:
    """A run config with only the teacher block a user would write for a local server."""
    teacher = {
        "backend": "openai",
        "base_url": base_url,
        "model": SERVED_NAME,
        "api_key_env": KEY_ENV,
        "max_in_flight": 4,
        "timeout_s": 120,
        "max_tokens_error_step": 8,
        "max_tokens_complete": 48,
        "retry": {"max_attempts": 2, "base_delay_s": 0.1, "max_delay_s": 0.5},
    }
    path.write_text(yaml.safe_dump({"teacher": teacher}), encoding="utf-8")
    return path


def _rlmec_teacher(inputs, out: Path, config: Path) -> dict:
    samples, problems, tokenizer = inputs
    env = {**os.environ, KEY_ENV: DUMMY_KEY}  # the key through the environment only, never a flag
    proc = subprocess.run([RLMEC, "teacher", "--samples", str(samples), "--problems", str(problems),
                           "--tokenizer", str(tokenizer), "--out", str(out), "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"rlmec teacher failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads((out / "metrics.json").read_text())


def _rows(out: Path) -> list[dict]:
    table = pq.read_table(out / "rewrites.parquet")
    assert table.schema.equals(REWRITES)
    return table.to_pylist()


def test_teacher_stage_against_a_vllm_server(inputs, tiny_model, tmp_path):
    log = tmp_path / "vllm_server.log"
    with vllm_server(tiny_model, log, chat_template=CHAT_TEMPLATE) as base_url:
        assert _unauthenticated_status(base_url) == 401  # the server checks the key the stage sends
        config = _config(tmp_path / "config.yaml", base_url)
        out = tmp_path / "out"
        metrics = _rlmec_teacher(inputs, out, config)
        posts = _chat_posts(log)
    rows = _rows(out)
    shutil.copy(out / "rewrites.parquet", tmp_path / "first.parquet")

    # A rerun with the server gone is answered from the response cache: nothing is sent, same rows.
    rerun = _rlmec_teacher(inputs, out, config)
    assert rerun["requests_sent"] == 0 and rerun["cache_hits"] == metrics["requests_sent"] - metrics["retries"]
    assert pq.read_table(out / "rewrites.parquet").equals(pq.read_table(tmp_path / "first.parquet"))

    wrong = [r for r in rows if not r["prediction_correct"]]
    right = [r for r in rows if r["prediction_correct"]]
    assert len(rows) == metrics["distinct_predictions"] == 13 and len(wrong) == metrics["sent_to_teacher"] == 7
    assert all(r["status"] in REWRITE_STATUSES for r in rows)
    assert all(r["status"] == "ok" and r["rewrite"] == r["prediction"] and r["attempts"] == 0 for r in right)

    # Every request reached the server and was answered: no api_error, tokens counted, the server's log agrees.
    assert metrics["statuses"]["api_error"] == 0, [r["detail"] for r in wrong if r["status"] == "api_error"]
    assert metrics["teacher_backend"] == "openai" and metrics["teacher_model"] == SERVED_NAME
    assert metrics["requests_sent"] == posts >= len(wrong) + 1
    assert metrics["prompt_tokens"] > 300 * len(wrong) and metrics["completion_tokens"] > 0
    for r in wrong:
        assert r["teacher_backend"] == "openai" and r["teacher_model"] == SERVED_NAME
        assert r["attempts"] >= 1 and r["prompt_tokens"] > 0, r
        # Junk from an untrained model is recorded, never fatal: an unreadable label or continuation is a
        # parse_error with its reply kept, a continuation with the wrong answer a wrong_answer.
        assert r["status"] in {"parse_error", "wrong_answer", "ok", "filtered"}, r
        assert r["detail"] or r["status"] == "ok", r
        assert r["error_step_reply"] is not None or r["rewrite_reply"] is not None, r

    # The empty prediction went straight to the completion request (one-shot exemplar: a multi-turn chat).
    empty = next(r for r in wrong if r["prediction"] == "")
    assert empty["error_step"] == 0 and empty["rewrite_reply"] is not None and empty["error_step_reply"] is None


def test_a_model_without_chat_template_is_an_api_error_that_says_so(inputs, tiny_model, tmp_path):
    """What a user sees after serving a base model as it is: each call is refused with a 400 that names
    the missing chat template, recorded once per prediction (not retried), and the stage still finishes."""
    log = tmp_path / "vllm_server.log"
    with vllm_server(tiny_model, log, chat_template=None) as base_url:
        metrics = _rlmec_teacher(inputs, tmp_path / "out", _config(tmp_path / "config.yaml", base_url))
    rows = _rows(tmp_path / "out")
    wrong = [r for r in rows if not r["prediction_correct"]]
    assert metrics["statuses"]["api_error"] == len(wrong) == 7
    assert metrics["requests_sent"] == len(wrong) == _chat_posts(log, 400) and metrics["retries"] == 0
    for r in wrong:
        assert r["status"] == "api_error" and r["attempts"] == 1, r
        assert "HTTP 400" in r["detail"] and "chat template" in r["detail"], r["detail"]
