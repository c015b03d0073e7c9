"""The task-adapter interface: one object per task family knows its prompt template, how to pull the
final answer out of a solution, how to judge it, how to split a solution into steps, and how to turn the
family's source files into the project's problem table (``rlmec_core.schemas.PROBLEMS``)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rlmec_core.errors import DataError

DEFAULT_PROMPT_TEMPLATE = "Question: {question}\nAnswer:\n"


def require_text(record: dict[str, Any], key: str, where: str, *, allow_empty: bool = False) -> str:
    """``record[key]`` as a string; ``DataError`` naming ``where`` if it is missing, not a string, or
    (unless ``allow_empty``) blank."""
    value = record.get(key)
    if value is None:
        raise DataError(f"{where}: missing field {key!r}")
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(f"{where}: empty {key}")
    return value


@dataclass(frozen=True)
class Problem:
    """One row of a problem table (see ``rlmec_core.schemas.PROBLEMS``)."""

    id: str
    question: str
    reference_solution: str
    answer: str
    task: str

    def as_row(self) -> dict[str, str]:
        return {
            "id": self.id,
            "question": self.question,
            "reference_solution": self.reference_solution,
            "answer": self.answer,
            "task": self.task,
        }


@dataclass(frozen=True)
class Judgement:
    """The adapter's verdict on one solution text."""

    pred_answer: str | None  # None when no answer could be extracted
    correct: bool


class TaskAdapter(abc.ABC):
    """Everything task-specific that the pipeline needs, behind one interface.

    Subclasses set ``name`` and implement ``extract_answer``, ``answers_match`` and ``load_source``.
    """

    name: ClassVar[str]

    def __init__(self, prompt_template: str | None = None) -> None:
        template = prompt_template or DEFAULT_PROMPT_TEMPLATE
        if "{question}" not in template:
            raise ValueError(f"prompt_template must contain '{{question}}', got {template!r}")
        self.prompt_template = template

    # -- prompting -------------------------------------------------------------------------------
    def format_prompt(self, question: str) -> str:
        """The text the policy continues: the template with the question filled in."""
        return self.prompt_template.replace("{question}", question)

    # -- answers ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def extract_answer(self, text: str) -> str | None:
        """The final answer stated in a solution text, or None when it states none."""

    @abc.abstractmethod
    def answers_match(self, pred_answer: str, gold_answer: str) -> bool:
        """Whether an extracted answer is equivalent to the gold answer."""

    def judge(self, solution: str, gold_answer: str) -> Judgement:
        """Extract the answer of ``solution`` and compare it with ``gold_answer``."""
        pred = self.extract_answer(solution)
        return Judgement(pred, pred is not None and self.answers_match(pred, gold_answer))

    def is_correct(self, solution: str, gold_answer: str) -> bool:
        return self.judge(solution, gold_answer).correct

    # -- steps -----------------------------------------------------------------------------------
    def split_steps(self, solution: str) -> list[str]:
        """A solution's steps: its non-blank lines, stripped of surrounding whitespace."""
        return [line.strip() for line in solution.splitlines() if line.strip()]


    # -- data ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def load_source(self, path: str | Path, *, split: str) -> list[Problem]:
        """Read a source file of this task family into problems.

        Raises ``rlmec_core.errors.DataError`` naming the file and line (or record) of a malformed row:
        bad JSON, a missing field, an empty question or an answer that does not parse.
        """
