"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions and Anthropic messages APIs.

Tests and benchmarks of the teacher stage point the official ``openai`` / ``anthropic`` clients at it;
nothing is mocked on the client side. Standard library only (``http.server.ThreadingHTTPServer``).

Usage::

    with FakeLLMServer(echo_responder, faults=FaultPlan(rate_429=0.1, seed=3)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        ...
        assert max(server.counts["by_key"].values()) == 1   # no completed request was sent twice

Endpoints
---------
``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic). Any other path gets a 404
JSON error, a body that is not a JSON object with a ``messages`` list gets a 400 JSON error, and
``"stream": true`` gets a 400 (streaming is not implemented). The responder receives the messages as
sent; for Anthropic a ``system`` prompt becomes a leading ``{"role": "system", "content": system}``
message (content as sent: a string or a list of text blocks) and a trailing assistant message (a
prefill) is passed through unchanged. Message contents may be strings or lists of blocks/parts;
:func:`content_text` flattens either to a string. Token counts are whitespace word counts.

Faults (:class:`FaultPlan`)
---------------------------
Each request gets at most one fault, drawn from ``random.Random(h)`` where ``h`` is a sha256 of
``(seed, request key, attempt)``; the attempt is how many times the same key arrived before. One
uniform draw ``u`` is compared with the cumulative rates in the fixed order 429, 500, hang, malformed,
truncated (so each rate is the exact probability of its fault; the rates must sum to at most 1).
The same plan and the same request sequence give the same faults in every run (and in every
process: no use of Python's salted ``hash``); a retry of a key draws again, so it can fault again or
succeed. :meth:`FaultPlan.choose` is the pure function, usable from tests to find keys that fault.

What each fault looks like to the clients (checked by ``tests/test_fake_llm_server.py`` with openai
3.57 and anthropic 2.14, ``max_retries=0``)::

    fault       server sends                                   openai 3.x                       anthropic 2.x
    429         429 JSON error, Retry-After: <s> (float),      openai.RateLimitError            anthropic.RateLimitError
                retry-after-ms: <ms>                           (err.response.headers has both)  (same)
    500         500 JSON error                                 openai.InternalServerError       anthropic.InternalServerError
    hang        nothing for hang_s, then a normal reply        openai.APITimeoutError           anthropic.APITimeoutError
                (skipped when the client has gone)             (client timeout < hang_s)        (same)
    malformed   200, application/json, body not valid JSON     json.JSONDecodeError (a          json.JSONDecodeError (a
                                                               ValueError; NOT an APIError)     ValueError; NOT an APIError)
    truncated   200, text cut to its first half,               finish_reason == "length"        stop_reason == "max_tokens"
                finish_reason "length" / stop_reason "max_tokens"

The malformed case is the one a classifier can miss: the clients raise the bare
``json.JSONDecodeError`` from ``httpx.Response.json()`` (not wrapped in ``APIResponseValidationError``
or any ``openai.APIError``), so the teacher stage must treat ``ValueError``/``json.JSONDecodeError``
from a call as retryable. ``APITimeoutError`` is a subclass of ``APIConnectionError`` in both clients.
With ``max_retries > 0`` both clients retry 429/500/timeouts themselves and honour ``retry-after-ms``
(preferred) then ``Retry-After`` (openai: up to 120 s; anthropic: any positive value); they do not
retry the malformed body.

Counts
------
:attr:`FakeLLMServer.counts` is a snapshot dict::

    {"requests": n,   # every POST to the two endpoints (including 400s)
     "ok": n, "429": n, "500": n, "hang": n, "malformed": n, "truncated": n,
     "bad_request": n, "not_found": n, "responder_error": n,
     "by_key": {key: n}}  # complete (stop/end_turn) replies sent for that key

A request key is :func:`request_key` of the messages as the responder sees them (for Anthropic that
includes the leading system message). ``by_key`` counts normal replies and late replies after a hang
when the client was still connected to receive it (then ``hang_served`` is also bumped); faulted and
truncated replies are not counted there. The counters are updated before the reply is written, so
anything a client received is already counted. ``hang`` counts every hang, whether or not a late
reply was sent. "ok" + the fault counters + bad_request + responder_error == requests.

``counts_path``: a background writer rewrites the JSON file atomically (temp file + ``os.replace``)
whenever the counts changed; writes coalesce under load (a 20k-key ``by_key`` costs milliseconds to
dump), so the file lags the in-memory counts by at most one write, and ``stop()`` writes it a final
time. ``flush_counts()`` writes it synchronously.

:attr:`FakeLLMServer.seen_auth` lists the distinct ``Authorization`` (e.g. ``"Bearer k"``) and
``x-api-key`` values received (both when a request has both), in order of first arrival; a request
with neither adds ``""``. Note: anthropic 2.x sends ``api_key`` as ``Authorization: Bearer <key>``
(not ``x-api-key``), so both clients show up as ``"Bearer <key>"``.

Script mode
-----------
``python tests/fake_llm_server.py --responder echo|module:function --port 0 --port-file PATH
--counts-path PATH [--latency S] [--rate-429 R] [--retry-after S] [--rate-500 R] [--rate-hang R]
[--hang-s S] [--rate-malformed R] [--rate-truncated R] [--seed N]`` serves in the foreground, writes
the port to ``--port-file`` (atomically) once listening, and stops cleanly on SIGTERM/SIGINT (writing
the counts file a last time).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import random
import select
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

Responder = Callable[[list[dict], dict], str]  # (messages, full_request_json) -> reply text

FAULTS = ("429", "500", "hang", "malformed", "truncated")
_COUNTER_NAMES = (
    "requests",
    "ok",
    *FAULTS,
    "hang_served",
    "bad_request",
    "not_found",
    "responder_error",
)


# --------------------------------------------------------------------------- helpers


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the form request keys are hashed from."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def request_key(messages: list[dict]) -> str:
    """sha256 hex of the canonical JSON of ``messages`` (as the responder sees them)."""
    return hashlib.sha256(canonical_json(messages)).hexdigest()


def content_text(content: Any) -> str:
    """A message content (string, or list of text blocks/parts, or None) as one string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return "".join(parts)
    return str(content)


def n_words(text: str) -> int:
    return len(text.split())


def echo_responder(messages: list[dict], request: dict) -> str:
    """Reply with the content of the last user message."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def load_responder(spec: str) -> Responder:
    """``"echo"`` or ``"module:function"`` (the tests directory and the repo root are importable)."""
    if spec == "echo":
        return echo_responder
    if ":" not in spec:
        raise ValueError(f"responder must be 'echo' or 'module:function', got {spec!r}")
    here = Path(__file__).resolve().parent
    for path in (str(here.parent), str(here)):
        if path not in sys.path:
            sys.path.insert(0, path)
    module_name, _, func_name = spec.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    if not callable(func):
        raise TypeError(f"{spec} is not callable")
    return func


# --------------------------------------------------------------------------- faults


@dataclass
class FaultPlan:
    rate_429: float = 0.0
    retry_after_s: float = 0.05  # sent as Retry-After (seconds, may be fractional) and retry-after-ms
    rate_500: float = 0.0
    rate_hang: float = 0.0
    hang_s: float = 30.0
    rate_malformed: float = 0.0
    rate_truncated: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        rates = self.rates()
        for name, rate in zip(FAULTS, rates):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate for {name} must be in [0, 1], got {rate}")
        if sum(rates) > 1.0 + 1e-9:
            raise ValueError(f"fault rates sum to {sum(rates)} > 1")
        if self.retry_after_s < 0 or self.hang_s < 0:
            raise ValueError("retry_after_s and hang_s must be >= 0")

    def rates(self) -> tuple[float, ...]:
        return (self.rate_429, self.rate_500, self.rate_hang, self.rate_malformed, self.rate_truncated)

    def choose(self, key: str, attempt: int) -> str | None:
        """The fault (one of :data:`FAULTS`) for the ``attempt``-th arrival (0-based) of ``key``, or None."""
        rates = self.rates()
        if not any(rates):
            return None
        digest = hashlib.sha256(f"{self.seed}\x00{key}\x00{attempt}".encode()).digest()
        u = random.Random(int.from_bytes(digest[:8], "big")).random()
        edge = 0.0
        for name, rate in zip(FAULTS, rates):
            edge += rate
            if u < edge:
                return name
        return None


# --------------------------------------------------------------------------- HTTP


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    fake: FakeLLMServer

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return  # a client that went away (timeouts, kill -9): not worth a traceback
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: no line per request

    def setup(self) -> None:
        super().setup()
        # headers and body go out in one send (see _send); no Nagle/delayed-ACK 40 ms stalls either way
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    # ---- plumbing

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self._headers_buffer.append(b"\r\n")  # end_headers() without its flush: one write for all
        self._headers_buffer.append(body)
        self.flush_headers()

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), headers)

    def _error(self, api: str, status: int, kind: str, message: str, headers: dict | None = None) -> None:
        if api == "anthropic":
            atype = {
                400: "invalid_request_error",
                404: "not_found_error",
                429: "rate_limit_error",
            }.get(status, "api_error")
            body = {"type": "error", "error": {"type": atype, "message": message}}
        else:
            otype = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_exceeded"}.get(
                status, "server_error"
            )
            body = {"error": {"message": message, "type": otype, "param": None, "code": kind}}
        self._send_json(status, body, headers)

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    # ---- verbs

    def do_GET(self) -> None:  # noqa: N802
        self._drain_and_404()

    def do_PUT(self) -> None:  # noqa: N802
        self._drain_and_404()

    def do_DELETE(self) -> None:  # noqa: N802
        self._drain_and_404()

    def _drain_and_404(self) -> None:
        self._read_body()
        fake = self.server.fake
        fake._bump("not_found")
        api = "anthropic" if self.path.split("?")[0].rstrip("/").endswith("/messages") else "openai"
        self._error(api, 404, "not_found", f"no route for {self.command} {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        fake = self.server.fake
        path = self.path.split("?")[0].rstrip("/")
        body = self._read_body()
        if path == "/v1/chat/completions":
            api = "openai"
        elif path == "/v1/messages":
            api = "anthropic"
        else:
            fake._bump("not_found")
            self._error("openai", 404, "not_found", f"no route for POST {self.path}")
            return
        auth = [v for v in (self.headers.get("Authorization"), self.headers.get("x-api-key")) if v] or [""]
        fake._request_arrived(auth)

        # ---- parse and validate
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        messages = request.get("messages") if isinstance(request, dict) else None
        problem = None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            problem = "request body must be a JSON object with a 'messages' list of objects"
        elif request.get("stream"):
            problem = "streaming is not supported by the fake server"
        elif api == "anthropic" and request.get("system") is not None:
            messages = [{"role": "system", "content": request["system"]}, *messages]
        if problem is not None:
            fake._bump("bad_request")
            fake._sleep(fake.latency_s)
            self._error(api, 400, "invalid_request", problem)
            return

        key = request_key(messages)
        fault = fake._choose_fault(key)
        fake._sleep(fake.latency_s)
        plan = fake.faults

        if fault == "429":
            fake._finish("429")
            retry = plan.retry_after_s
            headers = {"Retry-After": f"{retry:g}", "retry-after-ms": f"{retry * 1000:g}"}
            self._error(api, 429, "rate_limit_exceeded", "fake rate limit", headers)
            return
        if fault == "500":
            fake._finish("500")
            self._error(api, 500, "server_error", "fake internal server error")
            return
        if fault == "malformed":
            fake._finish("malformed")
            self._send(200, b'{"id": "fake-malformed", "choices": [{"index": 0, "message": {"role": "assis')
            return
        if fault == "hang":
            fake._bump("hang")
            if fake._sleep(plan.hang_s) or self._client_gone():
                self.close_connection = True
                return  # stopping, or the client timed out: nobody to answer

        # ---- answer
        try:
            text = fake.responder(messages, request)
            if not isinstance(text, str):
                raise TypeError(f"responder returned {type(text).__name__}, expected str")
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            fake._finish("responder_error" if fault != "hang" else None)
            self._error(api, 500, "responder_error", f"responder raised {type(exc).__name__}: {exc}")
            return

        truncated = fault == "truncated"
        if truncated:
            text = text[: len(text) // 2]
            fake._finish("truncated")
        elif fault == "hang":
            fake._finish("hang_served", key=key)
        else:
            fake._finish("ok", key=key)

        prompt_tokens = sum(n_words(content_text(m.get("content"))) for m in messages)
        completion_tokens = n_words(text)
        serial = fake._next_id()
        model = request.get("model") or "fake-model"
        if api == "openai":
            reply = {
                "id": f"chatcmpl-fake-{serial}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "length" if truncated else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        else:
            reply = {
                "id": f"msg_fake_{serial}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens" if truncated else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
            }
        self._send_json(200, reply)


# --------------------------------------------------------------------------- server


class FakeLLMServer:
    """A threaded OpenAI/Anthropic-compatible HTTP server backed by ``responder``; see the module doc."""

    def __init__(
        self,
        responder: Responder,
        *,
        faults: FaultPlan | None = None,
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        counts_path: str | os.PathLike | None = None,
    ) -> None:
        self.responder = responder
        self.faults = faults if faults is not None else FaultPlan()
        self.latency_s = float(latency_s)
        self.host = host
        self.port = int(port)
        self.counts_path = Path(counts_path) if counts_path is not None else None
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {name: 0 for name in _COUNTER_NAMES}
        self._by_key: dict[str, int] = {}
        self._arrivals: dict[str, int] = {}
        self._auth: dict[str, None] = {}  # ordered set
        self._serial = 0
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._writer_thread: threading.Thread | None = None
        self._dirty = threading.Condition(threading.Lock())
        self._dirty_flag = False
        self._write_lock = threading.Lock()

    # ---- lifecycle

    def start(self) -> FakeLLMServer:
        if self._httpd is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        if self.counts_path is not None:
            self.flush_counts()
            self._writer_thread = threading.Thread(target=self._writer, name="fake-llm-counts", daemon=True)
            self._writer_thread.start()
        self._serve_thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm-serve", daemon=True
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()  # wakes hanging / latency sleeps
        httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # idle keep-alive connections would otherwise keep being served
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout=5)
        if self._writer_thread is not None:
            with self._dirty:
                self._dirty.notify_all()
            self._writer_thread.join(timeout=5)
            self._writer_thread = None
        if self.counts_path is not None:
            self.flush_counts()
        self._httpd = None

    def __enter__(self) -> FakeLLMServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- public views

    @property
    def base_url(self) -> str:
        """For ``openai.OpenAI(base_url=...)``."""
        return f"{self.anthropic_base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """For ``anthropic.Anthropic(base_url=...)``."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def counts(self) -> dict:
        with self._lock:
            return {**self._counts, "by_key": dict(self._by_key)}

    @property
    def seen_auth(self) -> list[str]:
        with self._lock:
            return list(self._auth)

    def flush_counts(self) -> None:
        """Write ``counts_path`` now (atomically)."""
        if self.counts_path is None:
            return
        with self._write_lock:
            data = json.dumps(self.counts).encode("utf-8")
            directory = self.counts_path.parent
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.counts_path.name}.", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, self.counts_path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise

    # ---- used by the handler

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early when the server stops; True when stopping."""
        if seconds > 0:
            return self._stopping.wait(seconds)
        return self._stopping.is_set()

    def _request_arrived(self, auth: list[str]) -> None:
        with self._lock:
            self._counts["requests"] += 1
            for value in auth:
                self._auth.setdefault(value, None)
        self._mark_dirty()

    def _choose_fault(self, key: str) -> str | None:
        with self._lock:
            attempt = self._arrivals.get(key, 0)
            self._arrivals[key] = attempt + 1
        return self.faults.choose(key, attempt)

    def _bump(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1
        self._mark_dirty()

    def _finish(self, outcome: str | None, key: str | None = None) -> None:
        with self._lock:
            if outcome is not None:
                self._counts[outcome] += 1
            if key is not None:
                self._by_key[key] = self._by_key.get(key, 0) + 1
        self._mark_dirty()

    def _next_id(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    def _mark_dirty(self) -> None:
        if self.counts_path is None:
            return
        with self._dirty:
            self._dirty_flag = True
            self._dirty.notify()

    def _writer(self) -> None:
        while True:
            with self._dirty:
                while not self._dirty_flag and not self._stopping.is_set():
                    self._dirty.wait()
                if not self._dirty_flag and self._stopping.is_set():
                    return
                self._dirty_flag = False
            try:
                self.flush_counts()
            except OSError:
                traceback.print_exc(file=sys.stderr)


# --------------------------------------------------------------------------- script


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fake OpenAI/Anthropic HTTP server for tests and benchmarks.")
    p.add_argument("--responder", default="echo", help="'echo' or 'module:function'")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", default=None, help="write the chosen port here once listening")
    p.add_argument("--counts-path", default=None)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--rate-429", type=float, default=0.0)
    p.add_argument("--retry-after", type=float, default=0.05)
    p.add_argument("--rate-500", type=float, default=0.0)
    p.add_argument("--rate-hang", type=float, default=0.0)
    p.add_argument("--hang-s", type=float, default=30.0)
    p.add_argument("--rate-malformed", type=float, default=0.0)
    p.add_argument("--rate-truncated", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    faults = FaultPlan(
        rate_429=args.rate_429,
        retry_after_s=args.retry_after,
        rate_500=args.rate_500,
        rate_hang=args.rate_hang,
        hang_s=args.hang_s,
        rate_malformed=args.rate_malformed,
        rate_truncated=args.rate_truncated,
        seed=args.seed,
    )
    server = FakeLLMServer(
        load_responder(args.responder),
        faults=faults,
        latency_s=args.latency,
        host=args.host,
        port=args.port,
        counts_path=args.counts_path,
    )
    done = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    try:
        if args.port_file:
            port_file = Path(args.port_file)
            tmp = port_file.with_name(f".{port_file.name}.{os.getpid()}.tmp")
            tmp.write_text(f"{server.port}\n")
            os.replace(tmp, port_file)
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
