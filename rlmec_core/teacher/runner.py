"""Calling a teacher many times without losing or re-paying a request.

- **In flight:** at most ``max_in_flight`` requests at once (an asyncio semaphore around each call).
- **Retries:** transient failures (429, 5xx, timeouts, broken or malformed responses) are retried with
  exponential backoff and jitter, waiting at least as long as the server's ``Retry-After``; a truncated
  reply (``finish_reason == "length"``) is retried ``truncated_retries`` times, then kept as it is.
- **Cache:** every successful reply is appended to a JSON Lines file as soon as it arrives (one line,
  flushed), keyed by a hash of (backend, model, messages, generation settings). A crashed or killed run
  loses nothing it was answered; a rerun finds those replies on disk and sends only the rest. A line cut
  short by a kill is ignored when the cache is read back.

The cache never holds credentials: keys are not part of the request hash or of anything written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlmec_core.teacher.backends import CallSpec, PermanentError, Reply, Teacher, TransientError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Config ``teacher.retry``."""

    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    jitter: float = 0.25  # the delay is scaled by a factor drawn from [1 - jitter, 1 + jitter]
    truncated_retries: int = 1

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        backoff *= 1 + rng.uniform(-self.jitter, self.jitter)
        return max(backoff, retry_after or 0.0)


def cache_key(backend: str, model: str, call: CallSpec) -> str:
    """Hash of everything that determines the reply (not the credentials, not the call context)."""
    payload = {
        "backend": backend,
        "model": model,
        "messages": call.messages,
        "max_tokens": call.max_tokens,
        "temperature": call.temperature,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class ResponseCache:
    """An append-only JSON Lines file of replies, read back into memory when opened."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, tuple[Reply, int]] = {}  # key -> (reply, attempts it took)
        dropped = 0
        if self.path.exists():
            with self.path.open("r", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                        reply = Reply(rec["text"], rec["finish_reason"], rec.get("prompt_tokens", 0),
                                      rec.get("completion_tokens", 0))
                        self._entries[rec["key"]] = (reply, int(rec.get("attempts", 1)))
                    except (json.JSONDecodeError, KeyError, TypeError):
                        dropped += 1  # a line cut short by a kill
        if dropped:
            log.warning("%s: ignored %d unreadable line(s) (cut short by an interrupted run)", self.path, dropped)
        self._fh = self.path.open("a", encoding="utf-8")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[Reply, int] | None:
        """``(reply, attempts it took when it was fetched)`` or None."""
        return self._entries.get(key)

    def put(self, key: str, reply: Reply, attempts: int, **meta: Any) -> None:
        self._entries[key] = (reply, attempts)
        rec = {"key": key, "text": reply.text, "finish_reason": reply.finish_reason,
               "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
               "attempts": attempts, **meta}
        self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


@dataclass
class CallOutcome:
    reply: Reply | None
    error: str | None  # why the call failed after its attempts (None on success)
    attempts: int  # requests it took to get the reply (as recorded when a cached reply was fetched)
    cached: bool  # answered from the cache: nothing was sent in this run


@dataclass
class ClientStats:
    requests_sent: int = 0
    cache_hits: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class TeacherClient:
    """Rate-limited, retrying, caching access to one teacher (use inside one event loop)."""

    def __init__(
        self,
        teacher: Teacher,
        *,
        max_in_flight: int = 8,
        retry: RetryPolicy = RetryPolicy(),
        cache: ResponseCache | None = None,
        seed: int = 0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.teacher = teacher
        self.retry = retry
        self.cache = cache if teacher.cacheable else None
        self.stats = ClientStats()
        self._sem = asyncio.Semaphore(max_in_flight)
        self._rng = random.Random(seed)

    async def call(self, spec: CallSpec) -> CallOutcome:
        key = cache_key(self.teacher.backend, self.teacher.model, spec)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            return CallOutcome(hit[0], None, hit[1], True)
        attempts, truncated = 0, 0
        while True:
            attempts += 1
            try:
                async with self._sem:
                    self.stats.requests_sent += 1
                    reply = await self.teacher.complete(spec)
            except PermanentError as exc:
                return self._failed(str(exc), attempts)
            except TransientError as exc:
                problem, retry_after = str(exc), exc.retry_after
            else:
                self.stats.prompt_tokens += reply.prompt_tokens
                self.stats.completion_tokens += reply.completion_tokens
                if reply.finish_reason == "length" and truncated < self.retry.truncated_retries:
                    truncated += 1
                    problem, retry_after = "truncated reply (finish_reason=length)", None
                else:
                    if self.cache is not None:
                        self.cache.put(key, reply, attempts, kind=spec.kind, backend=self.teacher.backend,
                                       model=self.teacher.model)
                    self.stats.succeeded += 1
                    return CallOutcome(reply, None, attempts, False)
            self.stats.errors[problem.split(" (")[0]] = self.stats.errors.get(problem.split(" (")[0], 0) + 1
            if attempts >= self.retry.max_attempts:
                return self._failed(f"{problem}; gave up after {attempts} attempts", attempts)
            self.stats.retries += 1
            await asyncio.sleep(self.retry.delay(attempts, retry_after, self._rng))

    def _failed(self, message: str, attempts: int) -> CallOutcome:
        self.stats.failed += 1
        return CallOutcome(None, message, attempts, False)
