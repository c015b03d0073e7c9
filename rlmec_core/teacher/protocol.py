"""The two-step teacher protocol of RLMEC.md stage 2: prompts, reply parsing, and the rewrite.

1. **First error step.** The teacher sees the problem, the reference solution and the prediction, both
   with numbered steps (``[0] ...``), and answers with the label of the prediction's first wrong step,
   or ``correct``.
2. **Minimal completion.** The prediction's steps before that one are kept verbatim; the teacher is shown
   them after ``Correct prediction:`` and writes the rest, "correcting the mistakes with minimal
   modifications". The rewrite is the kept steps followed by the teacher's continuation.

The default templates say what the published protocol says (first-error labelling; a one-shot
exemplar for the completion) in this project's words; ``teacher.prompts`` in the config replaces them.
Templates are ``str.format`` strings with the fields ``{question}``, ``{reference}``, ``{prediction}``
and, for the completion, ``{kept}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ERROR_STEP_TEMPLATE = (
    "You are given a problem, its correct step-by-step solution, and a prediction written by a "
    "language model. The prediction may follow a different method from the correct solution and still "
    "be right. Find the first wrong step of the prediction.\n\n"
    "Problem: {question}\n\n"
    "Correct solution:\n{reference}\n\n"
    "Prediction:\n{prediction}\n\n"
    "Which step of the prediction is the first wrong one? Write only its label, for example [2]. "
    "If the prediction is correct, write only: correct"
)

COMPLETE_TEMPLATE = (
    "Given the problem and its correct solution, correct the mistakes in the prediction so that it "
    "reaches the correct answer. Make minimal modifications: keep the prediction's wording and every "
    "step that is right, and change only what is wrong.\n\n"
    "Problem: {question}\n\n"
    "Correct solution:\n{reference}\n\n"
    "Prediction:\n{prediction}\n\n"
    "The corrected prediction begins with the steps below, which are already right. Continue it from "
    "where it stops and write only the remaining steps, one per line, ending with 'The answer is ...'.\n"
    "Correct prediction:\n{kept}"
)

# One worked example shown before every completion request (a user turn and the assistant's reply).
EXEMPLAR = {
    "question": "A baker makes 24 muffins in the morning and twice as many in the afternoon. "
    "How many muffins does the baker make in all?",
    "reference": "In the afternoon the baker makes 24 * 2 = 48 muffins.\n"
    "In all the baker makes 24 + 48 = 72 muffins.\nThe answer is 72",
    "prediction": "In the afternoon the baker makes 24 * 2 = 48 muffins.\n"
    "So the baker makes 24 + 48 = 82 muffins in all.\nThe answer is 82",
    "error_step": 1,
    "continuation": "So the baker makes 24 + 48 = 72 muffins in all.\nThe answer is 72",
}


@dataclass(frozen=True)
class Prompts:
    """The templates in use (config ``teacher.prompts``; a null entry means the default above)."""

    error_step: str = ERROR_STEP_TEMPLATE
    complete: str = COMPLETE_TEMPLATE
    exemplar: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, object] | None) -> Prompts:
        cfg = cfg or {}
        out = cls(
            error_step=str(cfg.get("error_step") or ERROR_STEP_TEMPLATE),
            complete=str(cfg.get("complete") or COMPLETE_TEMPLATE),
            exemplar=bool(cfg.get("exemplar", True)),
        )
        for name, template, fields in (
            ("error_step", out.error_step, ("{question}", "{reference}", "{prediction}")),
            ("complete", out.complete, ("{question}", "{reference}", "{prediction}", "{kept}")),
        ):
            missing = [f for f in fields if f not in template]
            if missing:
                raise ValueError(f"teacher.prompts.{name} lacks the field(s) {missing}")
        return out


def number_steps(steps: Sequence[str]) -> str:
    return "\n".join(f"[{i}] {s}" for i, s in enumerate(steps))


def error_step_messages(prompts: Prompts, question: str, reference: Sequence[str], prediction: Sequence[str]) -> list[dict[str, str]]:
    """Chat messages asking for the first wrong step."""
    text = prompts.error_step.format(
        question=question, reference=number_steps(reference), prediction=number_steps(prediction)
    )
    return [{"role": "user", "content": text}]


def complete_messages(
    prompts: Prompts, question: str, reference: Sequence[str], prediction: Sequence[str], kept: Sequence[str]
) -> list[dict[str, str]]:
    """Chat messages asking for the rest of the corrected prediction after the ``kept`` steps."""
    messages: list[dict[str, str]] = []
    if prompts.exemplar:
        ex = EXEMPLAR
        ex_pred = ex["prediction"].splitlines()
        messages += [
            {
                "role": "user",
                "content": prompts.complete.format(
                    question=ex["question"],
                    reference=ex["reference"],
                    prediction=ex["prediction"],
                    kept="\n".join(ex_pred[: ex["error_step"]]),
                ),
            },
            {"role": "assistant", "content": ex["continuation"]},
        ]
    messages.append(
        {
            "role": "user",
            "content": prompts.complete.format(
                question=question,
                reference="\n".join(reference),
                prediction="\n".join(prediction),
                kept="\n".join(kept),
            ),
        }
    )
    return messages


_LABEL = re.compile(r"\[\s*(\d+)\s*\]")
_STEP_WORD = re.compile(r"\bstep\s*#?\s*(\d+)\b", re.IGNORECASE)
_BARE_INT = re.compile(r"^\s*(\d+)\s*\.?\s*$")
_CORRECT = re.compile(r"^\W*(?:the prediction is )?correct\W*$", re.IGNORECASE)


def parse_error_step(reply: str, n_steps: int) -> int | None:
    """The step label in a first-error reply: ``k`` in ``0..n_steps``, ``-1`` for "correct", or None
    when the reply names no valid step (out of range, several conflicting labels, or no label at all).

    ``k == n_steps`` (one past the last label) means every step is right but the prediction stops
    before its answer; the completion then keeps all of it. Accepted forms: ``[3]``, ``step 3`` /
    ``Step #3``, a bare ``3``, ``correct``.
    """
    text = reply.strip()
    if not text:
        return None
    labels = {int(m) for m in _LABEL.findall(text)}
    if not labels:
        labels = {int(m) for m in _STEP_WORD.findall(text)}
    if not labels:
        m = _BARE_INT.match(text)
        if m:
            labels = {int(m.group(1))}
    if len(labels) == 1:
        k = labels.pop()
        return k if 0 <= k <= n_steps else None
    if not labels and _CORRECT.match(text):
        return -1
    return None


_CORRECT_PREDICTION = re.compile(r"^\s*correct(?:ed)? prediction\s*:\s*", re.IGNORECASE)


def parse_continuation(reply: str, kept: Sequence[str]) -> list[str]:
    """The new steps of a completion reply (blank lines dropped).

    A leading ``Correct prediction:`` and a repetition of the kept steps are removed, since chat models
    often restate what they were given.
    """
    text = _CORRECT_PREDICTION.sub("", reply.strip(), count=1)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kept_clean = [k.strip() for k in kept]
    if kept_clean and lines[: len(kept_clean)] == kept_clean:
        lines = lines[len(kept_clean):]
    return lines
