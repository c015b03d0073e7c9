"""GSM8K (Cobbe et al. 2021): grade-school math word problems with calculator-annotated rationales.

Source rows are JSON lines ``{"question": ..., "answer": ...}`` whose ``answer`` is the rationale, one
step per line with ``<<48/2=24>>`` calculator notes, ending in a line ``#### 72``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rlmec_core.errors import DataError
from rlmec_core.tasks.answers import MathTask, parse_gold
from rlmec_core.tasks.base import Problem, require_text

_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
_GOLD_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")



def gsm8k_gold_answer(raw: str) -> str | None:
    """The number after ``####`` with thousands separators removed (``1,450,000`` -> ``1450000``), or
    None when it is not a plain decimal number."""
    ans = raw.strip()
    if _THOUSANDS.fullmatch(ans):
        ans = ans.replace(",", "")
    return ans if _GOLD_NUMBER.fullmatch(ans) else None


def gsm8k_reference_solution(rationale: str, answer: str) -> str:
    """The rationale without calculator notes, one stripped step per line, ending ``The answer is N``."""
    steps = [line.strip() for line in _CALCULATOR_NOTE.sub("", rationale).splitlines() if line.strip()]
    return "\n".join([*steps, f"The answer is {answer}"])


class GSM8KTask(MathTask):
    """GSM8K: numeric answers, judged by ``math_equal``."""

    name = "gsm8k"

    def problem_from_record(self, record: Mapping[str, Any], where: str) -> Problem:
        """A GSM8K row ``{"question", "answer"}``: the answer is the rationale ending ``#### N``.

        Raises ``DataError`` naming ``where`` for a missing or non-string field, an empty question, an
        answer without ``####`` or one whose final answer is not a number.
        """
        question = require_text(record, "question", where).strip()
        answer_text = require_text(record, "answer", where)
        if "####" not in answer_text:
            raise DataError(f"{where}: answer has no '#### <final answer>' line")
        rationale, raw_gold = answer_text.rsplit("####", 1)
        gold = gsm8k_gold_answer(raw_gold)
        if gold is None or not parse_gold(gold):
            raise DataError(f"{where}: final answer {raw_gold.strip()!r} after '####' is not a number")
        return Problem(id="", question=question, reference_solution=gsm8k_reference_solution(rationale, gold),
                       answer=gold, task=self.name)
