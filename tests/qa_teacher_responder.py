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

from teacher_support import reference_responder

from rlmec_core.tasks.mcqa import MCQATask, normalize_option

_ADAPTER = MCQATask()


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


#: Reply to the last user message: a first-error label or a corrected continuation.
qa_responder = reference_responder(first_wrong_step, continuation)
