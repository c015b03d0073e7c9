"""Teacher backends behind one interface: the programmatic oracle, any OpenAI-compatible endpoint
(OpenAI, a vLLM or other local server) through the official ``openai`` client, and Anthropic through the
official ``anthropic`` client.

A backend turns one ``CallSpec`` into one ``Reply`` or raises ``TransientError`` (worth retrying: rate
limits, 5xx, timeouts, broken connections, malformed responses) or ``PermanentError`` (a request the
server will never accept: bad request, authentication, unknown model). Retries, the response cache and
the in-flight limit live in ``rlmec_core.teacher.runner``; the clients' own retries are switched off.

API keys are read from the environment variable named in config (``teacher.api_key_env``) when the
backend is built, held only in the client object, and never written anywhere.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rlmec_core.errors import ConfigError
from rlmec_core.teacher import oracle


@dataclass(frozen=True)
class CallSpec:
    """One request to the teacher."""

    kind: str  # "error_step" | "complete"
    messages: list[dict[str, str]]  # chat messages (user/assistant turns)
    max_tokens: int
    temperature: float
    context: Mapping[str, Any] = field(default_factory=dict)  # structured inputs, for the oracle only


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TransientError(Exception):
    """A failure worth retrying; ``retry_after`` is the server's requested wait in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """A failure that retrying cannot fix."""


class Teacher(abc.ABC):
    backend: str
    model: str
    cacheable: bool = True  # replies worth caching on disk (paid API calls)

    @abc.abstractmethod
    async def complete(self, call: CallSpec) -> Reply:
        """Answer one call (see the module docstring for the exceptions)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""


class OracleTeacher(Teacher):
    """Exact answers for the demo task, computed from the structured call context (no network)."""

    backend = "oracle"
    cacheable = False

    def __init__(self, model: str = "arith-oracle") -> None:
        self.model = model

    async def complete(self, call: CallSpec) -> Reply:
        ctx = call.context
        question, prediction = ctx["question"], list(ctx["prediction"])
        if call.kind == "error_step":
            k = oracle.first_error_step(question, prediction)
            text = "correct" if k < 0 else f"[{k}]"
        elif call.kind == "complete":
            kept = list(ctx["kept"])
            fixed = oracle.minimal_rewrite(question, prediction, len(kept))
            text = "\n".join(fixed[len(kept):])
        else:
            raise PermanentError(f"unknown call kind {call.kind!r}")
        return Reply(text=text, finish_reason="stop")


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (a number of seconds)."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
    return None


_RETRYABLE_STATUS = {408, 409, 425, 429}
# Authentication failures: providers may quote (part of) the key in the message, so it is never kept.
_QUIET_STATUS = {401, 403}
_MAX_SERVER_MESSAGE = 300


def _server_message(body: object) -> str | None:
    """The explanation in an error body, whitespace collapsed and cut to a few hundred characters.

    Handles OpenAI's (already unwrapped by the client) ``{"message": ...}``, Anthropic's
    ``{"error": {"message": ...}}``, ``{"error": "..."}``, FastAPI's ``{"detail": ...}`` and plain text.
    A vLLM server explains its 400s here (no chat template, prompt longer than ``--max-model-len``,
    ``max_tokens`` too large) and its 404s (the model name it serves).
    """
    text: object = None
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping):
            text = err.get("message") or err.get("detail")
        elif isinstance(err, str):
            text = err
    elif isinstance(body, str):
        text = body
    if not isinstance(text, str) or not text.strip():
        return None
    text = " ".join(text.split())
    return text if len(text) <= _MAX_SERVER_MESSAGE else text[: _MAX_SERVER_MESSAGE - 3] + "..."


def _classify(exc: Exception, module: Any) -> Exception:
    """Map an ``openai``/``anthropic`` client exception to TransientError or PermanentError."""
    name = type(exc).__name__
    if isinstance(exc, module.APIStatusError):
        status = exc.status_code
        retry_after = _retry_after(getattr(exc.response, "headers", None))
        message = f"HTTP {status} ({name})"
        explanation = None if status in _QUIET_STATUS else _server_message(getattr(exc, "body", None))
        if explanation:
            message += f": {explanation}"
        if status in _RETRYABLE_STATUS or status >= 500:
            return TransientError(message, retry_after)
        return PermanentError(message)
    if isinstance(exc, (module.APITimeoutError, module.APIConnectionError)):
        return TransientError(name)
    # Malformed bodies (APIResponseValidationError, JSON decode errors) and anything unexpected from
    # the transport: retry, bounded by the retry policy.
    return TransientError(f"{name}: {str(exc)[:200]}")


def _api_key(env_var: str) -> str:
    key = os.environ.get(env_var)
    if not key:
        raise ConfigError(f"teacher.api_key_env: environment variable {env_var!r} is not set (it must hold the API key)")
    return key


class OpenAITeacher(Teacher):
    """Chat completions on any OpenAI-compatible endpoint."""

    backend = "openai"

    def __init__(self, model: str, *, base_url: str | None, api_key_env: str, timeout_s: float) -> None:
        import openai

        self._openai = openai
        self.model = model
        self._client = openai.AsyncOpenAI(
            api_key=_api_key(api_key_env), base_url=base_url, timeout=timeout_s, max_retries=0
        )

    async def complete(self, call: CallSpec) -> Reply:
        try:
            resp = await self._client.chat.completions.create(
                model=self.model,
                messages=call.messages,  # type: ignore[arg-type]
                max_tokens=call.max_tokens,
                temperature=call.temperature,
            )
        except self._openai.OpenAIError as exc:
            raise _classify(exc, self._openai) from None
        except ValueError as exc:  # json.JSONDecodeError: the clients do not wrap a body that is not JSON
            raise TransientError(f"malformed response: {type(exc).__name__}") from None
        if not resp.choices or resp.choices[0].message is None:
            raise TransientError("response without choices")
        choice = resp.choices[0]
        usage = resp.usage
        return Reply(
            text=choice.message.content or "",
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        )

    async def aclose(self) -> None:
        await self._client.close()


class AnthropicTeacher(Teacher):
    """The Anthropic messages API."""

    backend = "anthropic"

    def __init__(self, model: str, *, base_url: str | None, api_key_env: str, timeout_s: float) -> None:
        import anthropic

        self._anthropic = anthropic
        self.model = model
        kwargs: dict[str, Any] = {"api_key": _api_key(api_key_env), "timeout": timeout_s, "max_retries": 0}
        if base_url:
            kwargs["base_url"] = base_url
        self._client = anthropic.AsyncAnthropic(**kwargs)

    async def complete(self, call: CallSpec) -> Reply:
        system = "\n\n".join(m["content"] for m in call.messages if m["role"] == "system")
        messages = [m for m in call.messages if m["role"] != "system"]
        kwargs: dict[str, Any] = {}
        if system:
            kwargs["system"] = system
        try:
            # The anthropic 2.x client takes no temperature: replies use the model's own sampling.
            resp = await self._client.messages.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=call.max_tokens,
                **kwargs,
            )
        except self._anthropic.AnthropicError as exc:
            raise _classify(exc, self._anthropic) from None
        except ValueError as exc:  # json.JSONDecodeError, as above
            raise TransientError(f"malformed response: {type(exc).__name__}") from None
        text = "".join(getattr(block, "text", "") for block in resp.content or [])
        usage = resp.usage
        return Reply(
            text=text,
            finish_reason="length" if resp.stop_reason == "max_tokens" else "stop",
            prompt_tokens=getattr(usage, "input_tokens", 0) or 0,
            completion_tokens=getattr(usage, "output_tokens", 0) or 0,
        )

    async def aclose(self) -> None:
        await self._client.close()


def make_teacher(cfg: Mapping[str, Any], adapter_name: str) -> Teacher:
    """The backend named by config ``teacher.backend``."""
    backend = cfg["backend"]
    if backend == "oracle":
        if adapter_name != "arith":
            raise ConfigError(f"teacher.backend: the oracle only knows the demo task (arith), not {adapter_name!r}")
        return OracleTeacher()
    if not cfg.get("model"):
        raise ConfigError(f"teacher.model: the {backend} backend needs a model name")
    cls = {"openai": OpenAITeacher, "anthropic": AnthropicTeacher}.get(backend)
    if cls is None:
        raise ConfigError(f"teacher.backend: unknown backend {backend!r}")
    return cls(cfg["model"], base_url=cfg.get("base_url"), api_key_env=cfg["api_key_env"], timeout_s=cfg["timeout_s"])
