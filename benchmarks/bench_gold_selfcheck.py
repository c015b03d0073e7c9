"""Gold self-check of every task adapter on the reference data sets (issue 16, first acceptance item).

For each reference set in the shared data folder (MATH, the four MMLU files, GSM8K, SVAMP, ECQA, QASC, ARC,
OpenBookQA) the set is loaded with its adapter (``load_source``), the answer is extracted from each gold
reference solution (``extract_answer``) and compared with the gold answer (``answers_match``): a row
passes when an answer is extracted and it matches. The goal is at least 99.5% of the rows of every set.

A second, stricter check per family shows that the pass does not rest on string identity:

- math families (``math``, ``gsm8k``, ``svamp``): math-verify parses the gold answer to a mathematical
  object (a sympy expression, set, interval or matrix; ``parse_latex_answer`` for MATH, ``parse_gold``
  for the numeric sets), not only to the text it falls back to, so comparisons with it are made on
  mathematics, not strings;
- multiple choice (``mcqa``, ``mmlu``): ``The answer is <gold option text>`` (the text alone, no letter)
  is judged correct and the same sentence with any other option's text is not.

Prints one table (rows, passed, share, the strict check) and the failures (id, extracted, gold); writes
everything to ``benchmarks/out/bench_gold_selfcheck.json``. Exit status 1 when a set is below the goal.

    .venv/bin/python benchmarks/bench_gold_selfcheck.py                 # data from ../shared/data
    .venv/bin/python benchmarks/bench_gold_selfcheck.py --data DIR --limit 200
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlmec_core.tasks import TaskAdapter, get_adapter  # noqa: E402
from rlmec_core.tasks.answers import is_math_object, parse_gold, parse_latex_answer  # noqa: E402
from rlmec_core.tasks.base import Problem  # noqa: E402
from rlmec_core.tasks.mcqa import normalize_option, options  # noqa: E402

GOAL = 0.995

# (name, adapter, file under the data folder)
SETS: list[tuple[str, str, str]] = [
    ("MATH", "math", "math/test.jsonl"),
    ("MMLU biology", "mmlu", "mmlu/biology.json"),
    ("MMLU chemistry", "mmlu", "mmlu/chemistry.json"),
    ("MMLU mathematics", "mmlu", "mmlu/mathematics.json"),
    ("MMLU physics", "mmlu", "mmlu/physics.json"),
    ("GSM8K", "gsm8k", "gsm8k/test.jsonl"),
    ("SVAMP", "svamp", "svamp/SVAMP.json"),
    ("ECQA", "mcqa", "ecqa/test.jsonl"),
    ("ECQA train (head 2000)", "mcqa", "ecqa/train.head2000.jsonl"),
    ("QASC", "mcqa", "qasc/test.jsonl"),
    ("ARC", "mcqa", "arc/test.jsonl"),
    ("OpenBookQA", "mcqa", "openbookqa/test.jsonl"),
]

STRICT_CHECK = {
    "math": "gold parsed by math-verify",
    "gsm8k": "gold parsed by math-verify",
    "svamp": "gold parsed by math-verify",
    "mcqa": "option text alone, no other option",
    "mmlu": "option text alone, no other option",
}


@dataclass
class SetResult:
    """The self-check of one reference set."""

    name: str
    adapter: str
    file: str
    rows: int
    passed: int
    strict_passed: int
    seconds: float
    failures: list[dict[str, Any]]
    strict_failures: list[dict[str, Any]]

    @property
    def share(self) -> float:
        return self.passed / self.rows if self.rows else 0.0

    @property
    def strict_share(self) -> float:
        return self.strict_passed / self.rows if self.rows else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "adapter": self.adapter, "file": self.file, "rows": self.rows,
            "passed": self.passed, "share": round(self.share, 6), "meets_goal": self.share >= GOAL,
            "strict_check": STRICT_CHECK[self.adapter], "strict_passed": self.strict_passed,
            "strict_share": round(self.strict_share, 6), "seconds": round(self.seconds, 2),
            "failures": self.failures, "strict_failures": self.strict_failures,
        }


def _mmlu_options(question: str) -> list[str]:
    """The option texts of an MMLU question as the ``mmlu`` adapter lays it out (its last four lines,
    ``A. ...`` .. ``D. ...``)."""
    return [line[3:] for line in question.splitlines()[-4:]]


def strict_check(adapter: TaskAdapter, p: Problem) -> str | None:
    """None when ``p`` passes the family's strict check (module docstring), else why not."""
    if adapter.name == "math":
        return None if is_math_object(parse_latex_answer(p.answer)) else "math-verify reads no math in the gold"
    if adapter.name in ("gsm8k", "svamp"):
        return None if parse_gold(p.answer) else "math-verify reads no math in the gold"
    if adapter.name == "mmlu":
        gold_text, opts = p.answer.split(". ", 1)[1], _mmlu_options(p.question)
    else:
        gold_text, opts = p.answer, options(p.question)
    if not adapter.is_correct(f"The answer is {gold_text}", p.answer):
        return f"the gold text {gold_text!r} alone is judged wrong"
    wrongly = [o for o in opts if normalize_option(o) != normalize_option(gold_text)
               and adapter.is_correct(f"The answer is {o}", p.answer)]
    return f"other options judged correct: {wrongly}" if wrongly else None


def check_set(data_dir: Path, name: str, adapter_name: str, rel: str, limit: int | None) -> SetResult:
    """Load one reference set with its adapter and self-check every gold solution."""
    adapter = get_adapter(adapter_name)
    start = time.perf_counter()
    problems = adapter.load_source(data_dir / rel, split="test")[:limit]
    failures: list[dict[str, Any]] = []
    strict_failures: list[dict[str, Any]] = []
    passed = strict_passed = 0
    for p in problems:
        pred = adapter.extract_answer(p.reference_solution)
        if pred is not None and adapter.answers_match(pred, p.answer):
            passed += 1
        else:
            failures.append({"id": p.id, "extracted": pred, "gold": p.answer})
        why = strict_check(adapter, p)
        if why is None:
            strict_passed += 1
        else:
            strict_failures.append({"id": p.id, "gold": p.answer, "why": why})
    return SetResult(name, adapter_name, rel, len(problems), passed, strict_passed,
                     time.perf_counter() - start, failures, strict_failures)


def format_table(results: list[SetResult]) -> str:
    """A Markdown table: one row per set."""
    lines = ["| set | adapter | rows | passed | share | strict check | strict passed | strict share |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.name} | {r.adapter} | {r.rows} | {r.passed} | {100 * r.share:.2f}% | "
                     f"{STRICT_CHECK[r.adapter]} | {r.strict_passed} | {100 * r.strict_share:.2f}% |")
    return "\n".join(lines)


def default_data_dir() -> Path:
    env = os.environ.get("RLMEC_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="the reference data folder")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "bench_gold_selfcheck.json")
    parser.add_argument("--limit", type=int, default=None, help="check only the first N rows of each set")
    parser.add_argument("--show", type=int, default=20, help="failures printed per set (all go to the JSON)")
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" warnings

    started = time.perf_counter()
    results: list[SetResult] = []
    for name, adapter_name, rel in SETS:
        if not (args.data / rel).exists():
            print(f"skipped {name}: {args.data / rel} not found", file=sys.stderr)
            continue
        results.append(check_set(args.data, name, adapter_name, rel, args.limit))
        r = results[-1]
        print(f"{name}: {r.passed}/{r.rows} in {r.seconds:.1f}s", file=sys.stderr)

    print(format_table(results))
    for r in results:
        for kind, failures in (("failures", r.failures), ("strict-check failures", r.strict_failures)):
            if failures:
                print(f"\n{r.name}: {len(failures)} {kind}")
                for f in failures[: args.show]:
                    print("  " + json.dumps(f, ensure_ascii=False))
                if len(failures) > args.show:
                    print(f"  ... {len(failures) - args.show} more in {args.out}")
    below = [r.name for r in results if r.share < GOAL]
    verdict = f"NOT MET for {', '.join(below)}" if below else "met by every set"
    print(f"\ngoal >= {100 * GOAL:.1f}% per set: {verdict}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"data_dir": str(args.data), "goal": GOAL, "limit": args.limit,
              "seconds": round(time.perf_counter() - started, 1), "all_meet_goal": not below,
              "sets": [r.as_json() for r in results]}
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
