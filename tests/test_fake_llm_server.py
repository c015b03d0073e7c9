"""Tests of the fake OpenAI/Anthropic HTTP server (tests/fake_llm_server.py) with the real official clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import anthropic
import openai
import pytest

from fake_llm_server import (
    FAULTS,
    FakeLLMServer,
    FaultPlan,
    echo_responder,
    request_key,
)

HERE = Path(__file__).resolve().parent
USER = [{"role": "user", "content": "what is two plus two"}]


def _openai(server: FakeLLMServer, timeout: float = 10.0, **kw) -> openai.OpenAI:
    kw.setdefault("api_key", "k")
    return openai.OpenAI(base_url=server.base_url, max_retries=0, timeout=timeout, **kw)


def _anthropic(server: FakeLLMServer, timeout: float = 10.0, **kw) -> anthropic.Anthropic:
    kw.setdefault("api_key", "k")
    return anthropic.Anthropic(base_url=server.anthropic_base_url, max_retries=0, timeout=timeout, **kw)


def _ask(api: str, server: FakeLLMServer, messages: list[dict], timeout: float = 10.0) -> tuple[str, str]:
    """One request with the real client of ``api``; returns (text, finish_reason / stop_reason)."""
    if api == "openai":
        r = _openai(server, timeout).chat.completions.create(model="gpt-fake", messages=messages)
        return r.choices[0].message.content, r.choices[0].finish_reason
    r = _anthropic(server, timeout).messages.create(model="claude-fake", max_tokens=64, messages=messages)
    return r.content[0].text, r.stop_reason


def _outcome(client: openai.OpenAI, messages: list[dict]) -> str:
    try:
        r = client.chat.completions.create(model="gpt-fake", messages=messages)
    except openai.RateLimitError:
        return "429"
    except openai.InternalServerError:
        return "500"
    except json.JSONDecodeError:
        return "malformed"
    return "truncated" if r.choices[0].finish_reason == "length" else "ok"


def _message(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question number {i}"}]


def _settled(counts: dict) -> int:
    return sum(counts[k] for k in ("ok", *FAULTS, "bad_request", "responder_error"))


# --------------------------------------------------------------------------- round trips


def test_openai_round_trip() -> None:
    with FakeLLMServer(echo_responder) as server:
        r = _openai(server).chat.completions.create(
            model="gpt-fake",
            messages=[{"role": "system", "content": "be brief"}, *USER],
        )
        counts = server.counts
        auth = server.seen_auth
    assert r.object == "chat.completion" and r.model == "gpt-fake" and r.id
    assert r.choices[0].index == 0 and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "what is two plus two"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (7, 5, 12)
    assert counts["requests"] == counts["ok"] == 1
    assert counts["by_key"] == {request_key([{"role": "system", "content": "be brief"}, *USER]): 1}
    assert auth == ["Bearer k"]


def test_anthropic_round_trip_system_and_prefill() -> None:
    seen: list[list[dict]] = []

    def responder(messages: list[dict], request: dict) -> str:
        seen.append(messages)
        assert request["max_tokens"] == 64
        return "The answer is 4"

    messages = [*USER, {"role": "assistant", "content": "Let me think."}]  # ends with a prefill
    with FakeLLMServer(responder) as server:
        r = _anthropic(server).messages.create(
            model="claude-fake", max_tokens=64, system="be brief", messages=messages
        )
        counts = server.counts
    expected = [{"role": "system", "content": "be brief"}, *messages]
    assert seen == [expected]
    assert r.type == "message" and r.role == "assistant" and r.model == "claude-fake"
    assert [(b.type, b.text) for b in r.content] == [("text", "The answer is 4")]
    assert r.stop_reason == "end_turn"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (10, 4)
    assert counts["by_key"] == {request_key(expected): 1}


def test_api_key_from_env_is_what_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-planted-anthropic")
    with FakeLLMServer(echo_responder) as server:
        openai.OpenAI(base_url=server.base_url, max_retries=0).chat.completions.create(model="m", messages=USER)
        anthropic.Anthropic(base_url=server.anthropic_base_url, max_retries=0).messages.create(
            model="m", max_tokens=8, messages=USER
        )
        # anthropic 2.x sends its api_key as a bearer token too
        assert server.seen_auth == ["Bearer sk-planted-openai", "Bearer sk-planted-anthropic"]


# --------------------------------------------------------------------------- faults as the clients see them


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_429_is_rate_limit_error_with_retry_after(api: str) -> None:
    with FakeLLMServer(echo_responder, faults=FaultPlan(rate_429=1.0, retry_after_s=0.25)) as server:
        with pytest.raises(openai.RateLimitError if api == "openai" else anthropic.RateLimitError) as info:
            _ask(api, server, USER)
        assert server.counts["429"] == 1 and server.counts["by_key"] == {}
    headers = info.value.response.headers
    assert float(headers["retry-after"]) == 0.25
    assert float(headers["retry-after-ms"]) == 250
    assert info.value.status_code == 429


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_500_is_internal_server_error(api: str) -> None:
    with FakeLLMServer(echo_responder, faults=FaultPlan(rate_500=1.0)) as server:
        with pytest.raises(openai.InternalServerError if api == "openai" else anthropic.InternalServerError):
            _ask(api, server, USER)
        assert server.counts["500"] == 1


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_hang_is_timeout_error_and_stop_is_prompt(api: str) -> None:
    server = FakeLLMServer(echo_responder, faults=FaultPlan(rate_hang=1.0, hang_s=3.0)).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(openai.APITimeoutError if api == "openai" else anthropic.APITimeoutError):
            _ask(api, server, USER, timeout=0.5)
        assert time.monotonic() - t0 < 2.0
        assert server.counts["hang"] == 1
    finally:
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 1.5  # the hanging handler does not hold up stop()
    assert server.counts["by_key"] == {} and server.counts["hang_served"] == 0


def test_hang_answers_late_when_the_client_waits() -> None:
    with FakeLLMServer(echo_responder, faults=FaultPlan(rate_hang=1.0, hang_s=0.3)) as server:
        t0 = time.monotonic()
        text, finish = _ask("openai", server, USER, timeout=5)
        assert time.monotonic() - t0 >= 0.3
        counts = server.counts
    assert (text, finish) == ("what is two plus two", "stop")
    assert counts["hang"] == counts["hang_served"] == 1 and counts["ok"] == 0
    assert counts["by_key"] == {request_key(USER): 1}


def test_hang_does_not_block_other_requests() -> None:
    plan = FaultPlan(rate_hang=0.5, hang_s=3.0, seed=1)
    hanging = next(_message(i) for i in range(100) if plan.choose(request_key(_message(i)), 0) == "hang")
    fine = next(_message(i) for i in range(100) if plan.choose(request_key(_message(i)), 0) is None)
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            _ask("openai", server, hanging, timeout=1.5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with FakeLLMServer(echo_responder, faults=plan) as server:
        thread = threading.Thread(target=hang)
        thread.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        assert _ask("openai", server, fine)[1] == "stop"
        assert time.monotonic() - t0 < 0.5
        assert thread.is_alive()  # the hanging request is still hanging
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], openai.APITimeoutError)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_malformed_body_raises_json_decode_error(api: str) -> None:
    with FakeLLMServer(echo_responder, faults=FaultPlan(rate_malformed=1.0)) as server:
        with pytest.raises(json.JSONDecodeError) as info:
            _ask(api, server, USER)
        assert server.counts["malformed"] == 1
    # not wrapped in the clients' error hierarchies: a classifier must catch ValueError itself
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, (openai.OpenAIError, anthropic.AnthropicError))


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_truncated_reply(api: str) -> None:
    with FakeLLMServer(echo_responder, faults=FaultPlan(rate_truncated=1.0)) as server:
        text, finish = _ask(api, server, USER)
        counts = server.counts
    assert finish == ("length" if api == "openai" else "max_tokens")
    assert text == "what is two plus two"[:10]
    assert counts["truncated"] == 1 and counts["ok"] == 0 and counts["by_key"] == {}


def test_client_retries_honour_retry_after() -> None:
    """With max_retries > 0 the openai client waits the server's retry-after-ms itself (here 0.6 s)."""
    plan = FaultPlan(rate_429=0.5, retry_after_s=0.6, seed=0)
    msg = next(
        _message(i)
        for i in range(100)
        if plan.choose(request_key(_message(i)), 0) == "429" and plan.choose(request_key(_message(i)), 1) is None
    )
    with FakeLLMServer(echo_responder, faults=plan) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=2, timeout=5)
        t0 = time.monotonic()
        r = client.chat.completions.create(model="m", messages=msg)
        elapsed = time.monotonic() - t0
        counts = server.counts
    assert r.choices[0].finish_reason == "stop"
    assert 0.55 <= elapsed < 1.5
    assert counts["429"] == 1 and counts["ok"] == 1


# --------------------------------------------------------------------------- determinism


def test_fault_choice_is_deterministic_and_matches_rates() -> None:
    plan = FaultPlan(rate_429=0.1, rate_500=0.2, rate_hang=0.05, rate_malformed=0.05, rate_truncated=0.1, seed=7)
    keys = [request_key(_message(i)) for i in range(4000)]
    first = [plan.choose(k, a) for k in keys for a in range(2)]
    assert first == [FaultPlan(**vars(plan)).choose(k, a) for k in keys for a in range(2)]
    other = FaultPlan(**{**vars(plan), "seed": 8})
    assert first != [other.choose(k, a) for k in keys for a in range(2)]
    n = len(first)
    for name, rate in zip(FAULTS, plan.rates()):
        assert abs(first.count(name) / n - rate) < 0.02, name
    assert abs(first.count(None) / n - 0.5) < 0.03
    # a retry draws again: the attempt number matters
    assert [plan.choose(k, 0) for k in keys] != [plan.choose(k, 1) for k in keys]
    assert FaultPlan().choose(keys[0], 0) is None


def test_fault_sequence_over_http_is_reproducible() -> None:
    plan = FaultPlan(rate_429=0.2, rate_500=0.2, rate_malformed=0.1, rate_truncated=0.1, seed=3)
    sequence = [_message(i % 12) for i in range(36)]  # every key arrives three times

    def run(p: FaultPlan) -> list[str]:
        with FakeLLMServer(echo_responder, faults=p) as server:
            client = _openai(server)
            out = [_outcome(client, m) for m in sequence]
            assert _settled(server.counts) == server.counts["requests"] == len(sequence)
        return out

    first = run(plan)
    assert first == run(FaultPlan(**vars(plan)))
    expected = [plan.choose(request_key(m), i // 12) or "ok" for i, m in enumerate(sequence)]
    assert first == expected
    assert len(set(first)) >= 4  # the plan really produced a mix
    assert first != run(FaultPlan(**{**vars(plan), "seed": 4}))


def test_retrying_a_key_eventually_succeeds() -> None:
    plan = FaultPlan(rate_500=0.6, seed=11)
    key = request_key(USER)
    attempts_needed = next(a for a in range(100) if plan.choose(key, a) is None) + 1
    with FakeLLMServer(echo_responder, faults=plan) as server:
        for attempt in range(attempts_needed):
            try:
                _ask("openai", server, USER)
                break
            except openai.InternalServerError:
                continue
        counts = server.counts
    assert attempt + 1 == attempts_needed
    assert counts["500"] == attempts_needed - 1 and counts["ok"] == 1 and counts["by_key"] == {key: 1}


def test_fault_plan_validation() -> None:
    with pytest.raises(ValueError):
        FaultPlan(rate_429=0.6, rate_500=0.6)
    with pytest.raises(ValueError):
        FaultPlan(rate_hang=-0.1)


# --------------------------------------------------------------------------- counts, latency, errors


def test_counts_by_key_and_counts_file(tmp_path: Path) -> None:
    counts_path = tmp_path / "sub" / "counts.json"
    with FakeLLMServer(echo_responder, counts_path=str(counts_path)) as server:
        assert json.loads(counts_path.read_text())["requests"] == 0  # written at start
        for i in (0, 1, 2, 1):
            _ask("openai" if i != 2 else "anthropic", server, _message(i))
        counts = server.counts
        deadline = time.monotonic() + 2
        while json.loads(counts_path.read_text())["requests"] < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert json.loads(counts_path.read_text()) == counts
    assert counts["requests"] == counts["ok"] == 4
    assert counts["by_key"] == {request_key(_message(0)): 1, request_key(_message(1)): 2, request_key(_message(2)): 1}
    assert json.loads(counts_path.read_text()) == counts
    assert [p.name for p in counts_path.parent.iterdir()] == ["counts.json"]  # no temp files left


def test_latency_is_served_concurrently() -> None:
    n, latency = 8, 0.4
    with FakeLLMServer(echo_responder, latency_s=latency) as server:
        results: list[str] = []

        def one(i: int) -> None:
            results.append(_ask("openai", server, _message(i))[0])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        assert server.counts["ok"] == n
    assert sorted(results) == sorted(f"question number {i}" for i in range(n))
    assert latency <= elapsed < n * latency / 2  # serial would take n * latency


def _post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_bad_request_not_found_and_responder_error() -> None:
    def broken(messages: list[dict], request: dict) -> str:
        raise RuntimeError("responder bug")

    with FakeLLMServer(broken) as server:
        status, body = _post(server.base_url + "/chat/completions", b"{not json")
        assert status == 400 and "messages" in body["error"]["message"]
        status, body = _post(server.anthropic_base_url + "/v1/messages", b'{"messages": "nope"}')
        assert status == 400 and body["type"] == "error"
        status, body = _post(server.base_url + "/embeddings", b"{}")
        assert status == 404 and "error" in body
        with pytest.raises(openai.NotFoundError):
            openai.OpenAI(base_url=server.anthropic_base_url + "/v2", api_key="k", max_retries=0).models.list()
        with pytest.raises(openai.InternalServerError, match="responder bug"):
            _ask("openai", server, USER)
        counts = server.counts
    assert counts["bad_request"] == 2 and counts["not_found"] == 2 and counts["responder_error"] == 1
    assert counts["requests"] == 3 == _settled(counts)


def test_stop_closes_keep_alive_connections() -> None:
    server = FakeLLMServer(echo_responder).start()
    client = _openai(server, timeout=2)
    client.chat.completions.create(model="m", messages=USER)  # leaves a pooled connection open
    server.stop()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=USER)


# --------------------------------------------------------------------------- script mode


@pytest.mark.parametrize("responder", ["echo", "fake_llm_server:echo_responder"])
def test_script_mode(tmp_path: Path, responder: str) -> None:
    port_file, counts_path = tmp_path / "port", tmp_path / "counts.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "fake_llm_server.py"),
            "--responder", responder,
            "--port", "0",
            "--port-file", str(port_file),
            "--counts-path", str(counts_path),
            "--latency", "0.01",
            "--rate-truncated", "0.0",
            "--seed", "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "server did not write its port file"
            time.sleep(0.02)
        port = int(port_file.read_text())
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0, timeout=5)
        r = client.chat.completions.create(model="m", messages=USER)
        assert r.choices[0].message.content == "what is two plus two"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    counts = json.loads(counts_path.read_text())
    assert counts["requests"] == counts["ok"] == 1 and counts["by_key"] == {request_key(USER): 1}
    assert proc.stdout.read() == b""  # quiet
