"""A plausible teacher for MATH-format problems behind the fake LLM server: it answers the teacher's
two-step protocol (the default prompts of ``rlmec_core.teacher.protocol``) from the reference solution in
the prompt, whose steps (sentences, ``MATHTask.step_spans``) the prompt lists one per line.

- **First error step:** the first step of the prediction that is not a step of the reference (compared
  with whitespace collapsed); one past the last step when all are there but no answer is boxed;
  ``correct`` when the prediction's boxed answer is the reference's.
- **Minimal completion:** the reference's steps after as many as the prediction keeps.
"""

from __future__ import annotations

from teacher_support import reference_responder

from rlmec_core.tasks.math import MATHTask

_ADAPTER = MATHTask()


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


def continuation(reference: list[str], n_kept: int) -> list[str]:
    """The reference's steps after the first ``n_kept`` (its last step when none is left)."""
    return reference[n_kept:] or reference[-1:]


#: Reply to the last user message: a first-error label or a corrected continuation.
math_responder = reference_responder(first_wrong_step, continuation)
