"""Error replies of an OpenAI-compatible or Anthropic server reach the rewrite rows with their explanation.

A vLLM server answers a request it cannot serve with a 400 or 404 whose JSON body says why (the served
model has no chat template, the prompt is longer than ``--max-model-len``, ``max_tokens`` is too large,
the model name is not the one it serves). The backends keep that text in the error they raise, so the
``detail`` column tells a user what to change; authentication failures keep only their status (a
provider may quote part of the key in the message).
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlmec_core.teacher.backends import AnthropicTeacher, CallSpec, OpenAITeacher, PermanentError, TransientError

KEY_ENV = "RLMEC_TEST_BACKEND_ERRORS_KEY"
KEY = "sk-errors-test-key-0123456789"
CALL = CallSpec("error_step", [{"role": "user", "content": "Which step is wrong?"}], 8, 0.0)

# Bodies as the servers send them (vLLM's OpenAI server / Anthropic's API).
NO_TEMPLATE = ("As of transformers v4.44, default chat template is no longer allowed, so you must provide a "
               "chat template if the tokenizer does not define one.")
VLLM_400 = {"error": {"message": NO_TEMPLATE, "type": "BadRequestError", "param": None, "code": 400}}
VLLM_404 = {"error": {"message": "The model `wrong` does not exist. Valid aliases: tiny-teacher.",
                      "type": "NotFoundError", "param": "model", "code": 404}}
ANTHROPIC_400 = {"type": "error", "error": {"type": "invalid_request_error",
                                            "message": "max_tokens: 999999 > 8192, the maximum for this model"}}
AUTH_401 = {"error": {"message": f"Incorrect API key provided: {KEY[:6]}****{KEY[-4:]}",
                      "type": "invalid_request_error", "code": "invalid_api_key"}}


class _Canned(BaseHTTPRequestHandler):
    status = 500
    body: bytes = b""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.server.body)))  # type: ignore[attr-defined]
        self.end_headers()
        self.wfile.write(self.server.body)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def canned(monkeypatch):
    """``set(status, body)`` then point a client at the returned base URL."""
    monkeypatch.setenv(KEY_ENV, KEY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def set_reply(status: int, body: object) -> str:
        server.status = status  # type: ignore[attr-defined]
        server.body = (body if isinstance(body, str) else json.dumps(body)).encode()  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    try:
        yield set_reply
    finally:
        server.shutdown()
        server.server_close()


def _error(cls, base_url: str) -> Exception:
    teacher = cls("tiny-teacher", base_url=base_url, api_key_env=KEY_ENV, timeout_s=5)

    async def go() -> Exception:
        try:
            await teacher.complete(CALL)
        except (PermanentError, TransientError) as exc:
            return exc
        finally:
            await teacher.aclose()
        raise AssertionError("the call succeeded")

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, VLLM_400, NO_TEMPLATE),
        (404, VLLM_404, "The model `wrong` does not exist. Valid aliases: tiny-teacher."),
        (404, {"detail": "Not Found"}, "Not Found"),
    ],
)
def test_openai_permanent_errors_carry_the_server_explanation(canned, status, body, expected):
    exc = _error(OpenAITeacher, canned(status, body))
    assert isinstance(exc, PermanentError)
    assert str(exc).startswith(f"HTTP {status} (") and str(exc).endswith(f"): {expected}")


def test_anthropic_permanent_errors_carry_the_server_explanation(canned):
    exc = _error(AnthropicTeacher, canned(400, ANTHROPIC_400).removesuffix("/v1"))
    assert isinstance(exc, PermanentError)
    assert str(exc) == "HTTP 400 (BadRequestError): max_tokens: 999999 > 8192, the maximum for this model"


def test_transient_errors_keep_their_explanation_and_stats_key(canned):
    exc = _error(OpenAITeacher, canned(503, {"error": {"message": "engine\n  is   overloaded"}}))
    assert isinstance(exc, TransientError)
    assert str(exc) == "HTTP 503 (InternalServerError): engine is overloaded"
    assert str(exc).split(" (")[0] == "HTTP 503"  # how the runner counts errors in the metrics


def test_authentication_errors_keep_only_the_status(canned):
    exc = _error(OpenAITeacher, canned(401, AUTH_401))
    assert isinstance(exc, PermanentError)
    assert str(exc) == "HTTP 401 (AuthenticationError)"
    assert KEY[:6] not in str(exc) and KEY[-4:] not in str(exc)


def test_long_or_missing_explanations(canned):
    exc = _error(OpenAITeacher, canned(400, {"error": {"message": "x" * 5000}}))
    assert len(str(exc)) < 400 and str(exc).endswith("...")
    for body in ({}, {"error": {"message": ""}}, "", {"error": {"code": 400}}):
        exc = _error(OpenAITeacher, canned(400, body))
        assert str(exc) == "HTTP 400 (BadRequestError)", body
