"""A plausible teacher for MATH-format problems behind the fake LLM server: it answers the teacher's
two-step protocol (the default prompts of ``rlmec_core.teacher.protocol``) from the reference solution in
the prompt, whose steps (sentences, ``MATHTask.step_spans``) the prompt lists one per line.

- **First error step:** the first step of the prediction that is not a step of the reference (compared
  with whitespace collapsed); one past the last step when all are there but no answer is boxed;
  ``correct`` when the prediction's boxed answer is the reference's.
- **Minimal completion:** the reference's steps after as many as the prediction keeps.
"""

from __future__ import annotations

import re

from rlmec_core.tasks.math import MATHTask

_SECTIONS = re.compile(
    r"Problem: (?P<question>.*?)\n\nCorrect solution:\n(?P<reference>.*?)\n\nPrediction:\n(?P<prediction>.*?)\n\n",
    re.DOTALL,
)
_LABEL_PREFIX = re.compile(r"^\[\d+\] ")
_ADAPTER = MATHTask()


def _steps(block: str) -> list[str]:
    return [_LABEL_PREFIX.sub("", line).strip() for line in block.splitlines() if line.strip()]


def _norm(step: str) -> str:
    return " ".join(step.split())


def first_wrong_step(reference: list[str], prediction: list[str]) -> int:
    gold = _ADAPTER.extract_answer(" ".join(reference))
    if gold is not None and _ADAPTER.judge(" ".join(prediction), gold).correct:
        return -1
    known = {_norm(s) for s in reference}
    for i, step in enumerate(prediction):
        if _norm(step) not in known:
            return i
    return len(prediction)


def math_responder(messages: list[dict], request: dict) -> str:
    """Reply to the last user message: a first-error label or a corrected continuation."""
    text = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    m = _SECTIONS.search(text)
    if m is None:
        return "I cannot read this prompt."
    reference, prediction = _steps(m.group("reference")), _steps(m.group("prediction"))
    if "first wrong" in text:
        k = first_wrong_step(reference, prediction)
        return "correct" if k < 0 else f"[{k}]"
    kept_text = text.rsplit("Correct prediction:\n", 1)[1] if "Correct prediction:\n" in text else ""
    kept = [line for line in kept_text.splitlines() if line.strip()]
    return "\n".join(reference[len(kept):] or reference[-1:])
