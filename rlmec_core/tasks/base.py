"""The task-adapter interface: one object per task family knows its prompt template, how to pull the
final answer out of a solution, how to judge it, how to split a solution into steps, and how to turn the
family's source files into the project's problem table (``rlmec_core.schemas.PROBLEMS``)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Iterable, Mapping, Sequence
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
    attributes: tuple[tuple[str, str], ...] = ()  # (key, value) pairs, e.g. (("level", "Level 3"), ("type", "Algebra"))

    def as_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "reference_solution": self.reference_solution,
            "answer": self.answer,
            "task": self.task,
            "attributes": list(self.attributes),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Problem:
        """The inverse of ``as_row`` (a ``PROBLEMS`` row as pyarrow's ``to_pylist`` gives it)."""
        attrs = row.get("attributes") or ()
        attrs = attrs.items() if isinstance(attrs, Mapping) else attrs
        return cls(id=row["id"], question=row["question"], reference_solution=row["reference_solution"],
                   answer=row["answer"], task=row["task"], attributes=tuple((str(k), str(v)) for k, v in attrs))


@dataclass(frozen=True)
class Judgement:
    """The adapter's verdict on one solution text."""

    pred_answer: str | None  # None when no answer could be extracted
    correct: bool


class TaskAdapter(abc.ABC):
    """Everything task-specific that the pipeline needs, behind one interface.

    Subclasses set ``name`` and implement ``extract_answer``, ``answers_match`` and ``problem_from_record``
    (one source row to a ``Problem``); ``load_source`` reads a file through it. Prose tasks override
    ``step_spans`` (how a solution is cut into steps).
    """

    name: ClassVar[str]

    def __init__(self, prompt_template: str | None = None, chat_template: bool = False) -> None:
        template = prompt_template or DEFAULT_PROMPT_TEMPLATE
        if "{question}" not in template:
            raise ValueError(f"prompt_template must contain '{{question}}', got {template!r}")
        self.prompt_template = template
        self.chat_template = bool(chat_template)

    # -- prompting -------------------------------------------------------------------------------
    def format_prompt(self, question: str) -> str:
        """The text the policy continues: the template with the question filled in."""
        return self.prompt_template.replace("{question}", question)

    def encode_prompts(self, tokenizer, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of prompt texts (``format_prompt`` output) as the policy sees them: through the
        tokenizer's chat template when this adapter was made with ``chat_template=True``
        (``rlmec_core.prompting.encode_prompts``)."""
        from rlmec_core.prompting import encode_prompts

        return encode_prompts(tokenizer, prompts, chat_template=self.chat_template)

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
    def step_spans(self, solution: str) -> list[tuple[int, int]]:
        """Character spans ``[start, end)`` of a solution's steps, in order and disjoint: here each
        non-blank line without its surrounding whitespace. Everything between two spans (newlines, blank
        lines, indentation) is separator text that belongs to no step and is never edited."""
        spans: list[tuple[int, int]] = []
        pos = 0
        for line in solution.splitlines(keepends=True):
            stripped = line.strip()
            if stripped:
                start = pos + line.index(stripped[0])
                spans.append((start, start + len(stripped)))
            pos += len(line)
        return spans

    def split_steps(self, solution: str) -> list[str]:
        """A solution's steps as texts (``step_spans`` cut out of ``solution``)."""
        return [solution[a:b] for a, b in self.step_spans(solution)]

    def kept_prefix(self, solution: str, n_steps: int) -> str:
        """The raw text of ``solution`` before its step ``n_steps`` (0-based): the first ``n_steps`` steps
        with every separator between them exactly as written, and the separator after the last kept step.
        A minimal-edit rewrite is ``kept_prefix(prediction, k) + continuation``, so nothing before the
        first wrong step changes, not even whitespace."""
        return _prefix(solution, self.step_spans(solution), n_steps)

    def join_rewrite(self, prediction: str, n_kept: int, continuation: Sequence[str]) -> str:
        """A minimal-edit rewrite of ``prediction``: its raw text up to step ``n_kept`` (``kept_prefix``: the
        kept steps and every separator exactly as written), then the new steps ``continuation`` joined with
        the prediction's own separator (``step_separator``). When every step is kept and the prediction ends
        without a separator, one is added before the continuation."""
        spans = self.step_spans(prediction)  # once: a prose splitter is not free
        prefix = _prefix(prediction, spans, n_kept)
        if not continuation:
            return prefix
        sep = _separator(prediction, spans)
        if n_kept > 0 and n_kept == len(spans) and prefix[spans[-1][1]:] == "":
            prefix += sep
        return prefix + sep.join(continuation)

    def step_separator(self, solution: str) -> str:
        """The separator a continuation's steps are joined with: the first one ``solution`` uses between
        two steps (``"\n"`` when it has fewer than two)."""
        return _separator(solution, self.step_spans(solution))


    # -- data ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def problem_from_record(self, record: Mapping[str, Any], where: str) -> Problem:
        """One source row (a mapping of the family's field names) as a ``Problem``; its ``id`` is a
        placeholder that the loader replaces.

        Raises ``rlmec_core.errors.DataError`` starting with ``where`` (file and line, or data set and
        row) for a malformed row: a missing field, an empty question or an answer that does not parse.
        """

    def metadata(self, record: Mapping[str, Any]) -> dict[str, str | None]:
        """What a source row says beyond the problem (level, type, subject...), kept in the problem table's
        ``attributes`` column so that evaluations can break accuracy down by it; None values are dropped.
        None here; adapters of sets that carry such fields override it."""
        return {}

    def problems_from_records(self, records: Iterable[tuple[str, Mapping[str, Any]]], *, split: str) -> list[Problem]:
        """``problem_from_record`` of every ``(where, record)``, with ``metadata`` as attributes; ids
        ``{name}-{split}-{row:06d}`` (0-based)."""
        problems: list[Problem] = []
        for where, record in records:
            p = self.problem_from_record(record, where)
            attrs = tuple((k, str(v)) for k, v in self.metadata(record).items() if v is not None)
            problems.append(replace(p, id=f"{self.name}-{split}-{len(problems):06d}", attributes=p.attributes or attrs))
        return problems

    def load_source(self, path: str | Path, *, split: str) -> list[Problem]:
        """Read a JSON Lines source file of this task family into problems (``problem_from_record`` of each
        line; errors name ``file:line``)."""
        from rlmec_core.io import iter_jsonl

        return self.problems_from_records(((f"{path}:{n}", obj) for n, obj in iter_jsonl(path)), split=split)

    def load_json_list(self, path: str | Path, *, split: str, family: str) -> list[Problem]:
        """Read a source file holding one JSON list of records (SVAMP, MMLU); errors name the file and
        ``record <index>`` (0-based), or say the file is not a list of ``family`` records."""
        from rlmec_core.io import read_json

        data = read_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of {family} records, got {type(data).__name__}")
        return self.problems_from_records(((f"{path}: record {i}", r) for i, r in enumerate(data)), split=split)


def _prefix(solution: str, spans: Sequence[tuple[int, int]], n_steps: int) -> str:
    """``TaskAdapter.kept_prefix`` given the solution's ``spans``."""
    if n_steps < 0 or n_steps > len(spans):
        raise ValueError(f"n_steps={n_steps} outside 0..{len(spans)} (the solution has {len(spans)} steps)")
    return solution[: spans[n_steps][0]] if n_steps < len(spans) else solution


def _separator(solution: str, spans: Sequence[tuple[int, int]]) -> str:
    """``TaskAdapter.step_separator`` given the solution's ``spans``."""
    if len(spans) >= 2:
        sep = solution[spans[0][1]: spans[1][0]]
        if sep.strip() == "" and sep:
            return sep
    return "\n"
