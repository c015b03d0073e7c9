"""The teacher protocol (prompts, reply parsing), the oracle, and the runner's cache and backoff."""

from __future__ import annotations

import asyncio
import random

import pytest
from teacher_support import corrupt

from rlmec_core.tasks import get_adapter
from rlmec_core.tasks.arith import ArithSpec, generate_problems
from rlmec_core.teacher import oracle
from rlmec_core.teacher.backends import CallSpec, PermanentError, Reply, Teacher, TransientError
from rlmec_core.teacher.protocol import (
    Prompts,
    complete_messages,
    error_step_messages,
    parse_continuation,
    parse_error_step,
)
from rlmec_core.teacher.runner import ResponseCache, RetryPolicy, TeacherClient, cache_key

ADAPTER = get_adapter("arith")
Q = "Tom has 15 eggs. He finds 10 more. He sells 14. He loses 9. How many eggs does Tom have now?"


@pytest.mark.parametrize(
    "reply, n, expected",
    [
        ("[2]", 4, 2), (" [0] ", 4, 0), ("The first wrong step is [3].", 4, 3), ("Step 1", 4, 1),
        ("step #2 is wrong", 4, 2), ("2", 4, 2), ("correct", 4, -1), ("Correct.", 4, -1),
        ("[4]", 4, 4),  # one past the last step: the prediction stops before its answer
        ("[5]", 4, None), ("[1] or [2]", 4, None), ("I am not sure", 4, None), ("", 4, None),
        ("[1] is wrong, the rest is correct", 4, 1),
    ],
)
def test_parse_error_step(reply, n, expected):
    assert parse_error_step(reply, n) == expected


def test_parse_continuation_drops_restated_parts():
    kept = ["15 + 10 = 25"]
    assert parse_continuation("25 - 14 = 11\n\nThe answer is 11", kept) == ["25 - 14 = 11", "The answer is 11"]
    assert parse_continuation("Correct prediction: 15 + 10 = 25\n25 - 14 = 11", kept) == ["25 - 14 = 11"]
    assert parse_continuation("   ", kept) == []


def test_prompts_number_steps_and_keep_the_prefix():
    prompts = Prompts()
    ref = ["15 + 10 = 25", "25 - 14 = 11", "11 - 9 = 2", "The answer is 2"]
    pred = ["15 + 10 = 25", "25 - 14 = 12", "12 - 9 = 3", "The answer is 3"]
    (msg,) = error_step_messages(prompts, Q, ref, pred)
    assert "[1] 25 - 14 = 12" in msg["content"] and "[3] The answer is 2" in msg["content"]
    msgs = complete_messages(prompts, Q, ref, pred, pred[:1])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]  # the one-shot exemplar first
    assert msgs[-1]["content"].endswith("Correct prediction:\n15 + 10 = 25")
    assert len(complete_messages(Prompts(exemplar=False), Q, ref, pred, [])) == 1


def test_custom_templates_must_have_their_fields():
    with pytest.raises(ValueError, match=r"teacher.prompts.complete lacks .*\{kept\}"):
        Prompts.from_config({"complete": "Fix {prediction} of {question} using {reference}"})
    assert Prompts.from_config({"error_step": None}).error_step == Prompts().error_step


@pytest.mark.parametrize(
    "prediction, k, rewrite",
    [
        (["First, 15 + 10 = 25", "Then 25 - 14 = 11", "11 - 9 = 2", "The answer is 2"], -1, None),
        (["15 + 10 = 25", "So 25 - 14 = 12", "12 - 9 = 3", "The answer is 3"], 1,
         ["15 + 10 = 25", "So 25 - 14 = 11", "11 - 9 = 2", "The answer is 2"]),
        (["10 + 15 = 25", "Now 25 - 14 = 11", "The answer is 11"], 2,  # a step is missing
         ["10 + 15 = 25", "Now 25 - 14 = 11", "11 - 9 = 2", "The answer is 2"]),
        (["15 + 10 = 25", "25 - 14 = 11", "11 - 9 = 2"], 3,  # stops before the answer
         ["15 + 10 = 25", "25 - 14 = 11", "11 - 9 = 2", "The answer is 2"]),
        (["15 + 10 = 25", "25 - 14 = 11", "11 - 9 = 2", "The answer is 2", "extra"], 4,
         ["15 + 10 = 25", "25 - 14 = 11", "11 - 9 = 2", "The answer is 2"]),
        (["15 + 10 = 26", "Then 26 + 14 = 40", "40 - 9 = 31", "The answer is 31"], 0,
         ["15 + 10 = 25", "Then 25 - 14 = 11", "11 - 9 = 2", "The answer is 2"]),
        (["15 + 10 = 25", "25 - 14 = 11", "11 - 9 = 0", "The answer is 00"], 2,  # the answer's digits, not a substring
         ["15 + 10 = 25", "25 - 14 = 11", "11 - 9 = 2", "The answer is 2"]),
    ],
)
def test_oracle_cases(prediction, k, rewrite):
    assert oracle.first_error_step(Q, prediction) == k
    if k >= 0:
        assert oracle.minimal_rewrite(Q, prediction, k) == rewrite


def test_oracle_is_exact_and_more_minimal_than_replacing_the_rest():
    from rlmec_core.edits import edit_ratio

    rng = random.Random(0)
    problems = generate_problems(300, 4, ArithSpec(max_steps=4), split="x")
    ours, crude = [], []
    for p in problems:
        pred = ADAPTER.split_steps(corrupt(p.question, rng))
        k = oracle.first_error_step(p.question, pred)
        assert k >= 0
        fixed = oracle.minimal_rewrite(p.question, pred, k)
        assert fixed[:k] == pred[:k]
        assert ADAPTER.is_correct("\n".join(fixed), p.answer)
        assert oracle.first_error_step(p.question, fixed) == -1
        rest = oracle.replace_rest(pred, ADAPTER.split_steps(p.reference_solution), k)
        chars = lambda lines: [ord(c) for c in "\n".join(lines)]  # noqa: E731
        ours.append(edit_ratio(chars(pred), chars(fixed)))
        crude.append(edit_ratio(chars(pred), chars(rest)))
    assert all(a <= b for a, b in zip(ours, crude, strict=True))
    assert sum(ours) < sum(crude)


def test_cache_survives_a_line_cut_short(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = ResponseCache(path)
    cache.put("a", Reply("[1]", "stop", 10, 2), attempts=3)
    cache.put("b", Reply("x", "length"), attempts=1)
    cache.close()
    with path.open("a") as fh:
        fh.write('{"key": "c", "text": "cut sho')  # what a kill -9 mid-write leaves
    reopened = ResponseCache(path)
    assert len(reopened) == 2
    assert reopened.get("a") == (Reply("[1]", "stop", 10, 2), 3)
    assert reopened.get("c") is None


def test_cache_key_ignores_context_but_not_settings():
    a = CallSpec("complete", [{"role": "user", "content": "q"}], 16, 0.0, {"question": "x"})
    b = CallSpec("complete", [{"role": "user", "content": "q"}], 16, 0.0, {"question": "y"})
    c = CallSpec("complete", [{"role": "user", "content": "q"}], 32, 0.0)
    assert cache_key("openai", "m", a) == cache_key("openai", "m", b)
    assert cache_key("openai", "m", a) != cache_key("openai", "m", c)
    assert cache_key("openai", "m", a) != cache_key("openai", "m2", a)


def test_backoff_grows_caps_and_honours_retry_after():
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0, jitter=0.0)
    rng = random.Random(0)
    assert [policy.delay(i, None, rng) for i in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.delay(1, 30.0, rng) == 30.0
    jittered = RetryPolicy(base_delay_s=1.0, jitter=0.5)
    assert all(0.5 <= jittered.delay(1, None, rng) <= 1.5 for _ in range(100))


class Flaky(Teacher):
    """Fails transiently twice per call, then answers; a permanent error for one prompt."""

    backend, model = "flaky", "m"

    def __init__(self):
        self.calls: dict[str, int] = {}

    async def complete(self, call):
        text = call.messages[0]["content"]
        self.calls[text] = self.calls.get(text, 0) + 1
        if text == "forbidden":
            raise PermanentError("HTTP 403")
        if self.calls[text] <= 2:
            raise TransientError("HTTP 500", retry_after=0.0)
        return Reply(f"ok:{text}", "stop", 1, 1)


def test_client_retries_then_caches(tmp_path):
    teacher = Flaky()
    fast = RetryPolicy(base_delay_s=0.0, jitter=0.0, max_attempts=5)

    async def run(client, prompts):
        return await asyncio.gather(*(client.call(CallSpec("complete", [{"role": "user", "content": p}], 8, 0.0))
                                      for p in prompts))

    cache = ResponseCache(tmp_path / "c.jsonl")
    client = TeacherClient(teacher, max_in_flight=2, retry=fast, cache=cache)
    outcomes = asyncio.run(run(client, ["a", "b", "forbidden"]))
    assert [o.reply.text if o.reply else None for o in outcomes] == ["ok:a", "ok:b", None]
    assert [o.attempts for o in outcomes] == [3, 3, 1]
    assert "403" in outcomes[2].error
    cache.close()
    again = TeacherClient(teacher, retry=fast, cache=ResponseCache(tmp_path / "c.jsonl"))
    outcomes = asyncio.run(run(again, ["a", "b"]))
    assert all(o.cached for o in outcomes) and again.stats.requests_sent == 0
    assert [o.attempts for o in outcomes] == [3, 3]  # as recorded when fetched

    give_up = TeacherClient(Flaky(), retry=RetryPolicy(base_delay_s=0.0, jitter=0.0, max_attempts=2))
    (outcome,) = asyncio.run(run(give_up, ["c"]))
    assert outcome.reply is None and "gave up after 2 attempts" in outcome.error
