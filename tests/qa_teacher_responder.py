"""A plausible QA teacher behind the fake LLM server: answers the teacher's two-step protocol (the default
prompts of ``rlmec_core.teacher.protocol``) for multiple-choice problems from the reference solution that
the prompt contains.

- **First error step:** the first step of the prediction that is not a step of the reference solution
  (compared after ``normalize_option``), so a prediction that copies the reference's opening steps keeps
  them; ``[n]`` (one past the last step) when every step is in the reference but the answer line is
  missing; ``correct`` when the prediction already states the reference's answer.
- **Minimal completion:** the reference's steps after as many as the prediction keeps, ending with the
  reference's ``The answer is <option>`` line (added when the reference has none).

Use it in process (``FakeLLMServer(qa_responder)``) or from the command line
(``python tests/fake_llm_server.py --responder qa_teacher_responder:qa_responder``).
"""

from __future__ import annotations

import re

from rlmec_core.tasks.mcqa import MCQATask, normalize_option

_SECTIONS = re.compile(
    r"Problem: (?P<question>.*?)\n\nCorrect solution:\n(?P<reference>.*?)\n\nPrediction:\n(?P<prediction>.*?)\n\n",
    re.DOTALL,
)
_LABEL_PREFIX = re.compile(r"^\[\d+\] ")
_ADAPTER = MCQATask()


def _steps(block: str) -> list[str]:
    return [_LABEL_PREFIX.sub("", line).strip() for line in block.splitlines() if line.strip()]


def first_wrong_step(reference: list[str], prediction: list[str]) -> int:
    """Index of the prediction's first step missing from the reference; ``len(prediction)`` when none is
    missing but the prediction states no answer; -1 when it states the reference's answer."""
    gold = _ADAPTER.extract_answer("\n".join(reference))
    if gold is not None and _ADAPTER.judge("\n".join(prediction), gold).correct:
        return -1
    known = {normalize_option(s) for s in reference}
    for i, step in enumerate(prediction):
        if normalize_option(step) not in known:
            return i
    return len(prediction)


def continuation(reference: list[str], n_kept: int) -> list[str]:
    """The reference's steps after the first ``n_kept`` (at least its answer line), ending with the answer."""
    body = [s for s in reference if _ADAPTER.extract_answer(s) is None]
    answer_lines = [s for s in reference if _ADAPTER.extract_answer(s) is not None]
    answer = answer_lines[-1] if answer_lines else None
    rest = body[n_kept:]
    if answer is None:
        return rest or body[-1:]
    return [*rest, answer]


def qa_responder(messages: list[dict], request: dict) -> str:
    """Reply to the last user message: a first-error label or a corrected continuation."""
    text = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    m = _SECTIONS.search(text)
    if m is None:
        return "I cannot read this prompt."
    reference = _steps(m.group("reference"))
    prediction = _steps(m.group("prediction"))
    if "first wrong" in text:
        k = first_wrong_step(reference, prediction)
        return "correct" if k < 0 else f"[{k}]"
    kept_text = text.rsplit("Correct prediction:\n", 1)[1] if "Correct prediction:\n" in text else ""
    kept = [line for line in kept_text.splitlines() if line.strip()]
    return "\n".join(continuation(reference, len(kept)))
