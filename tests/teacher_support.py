"""Support for teacher tests and benchmarks: synthetic wrong predictions of demo problems, and a
responder that lets the fake LLM server answer the teacher's (default) prompts like the oracle."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from rlmec_core.io import write_parquet
from rlmec_core.models.tiny import train_tokenizer
from rlmec_core.schemas import PROBLEMS, SAMPLES
from rlmec_core.stages.data import problems_table
from rlmec_core.tasks.arith import STEP_STYLES, ArithSpec, Step, answer_line, generate_problems, parse_question, solve
from rlmec_core.teacher import oracle

PROMPT_TEMPLATE = "Question: {question}\nAnswer:\n"


def corrupt(question: str, rng: random.Random) -> str:
    """A wrong solution in the demo format, with errors like a small model's: a miscomputed result
    (propagated to later steps or not), a miscopied operand, or a wrong operator; wording varies."""
    start, ops = parse_question(question)
    truth = solve(start, ops)
    for _ in range(100):
        k = rng.randrange(len(truth))
        lines: list[str] = []
        value = start
        kind = rng.choice(["result", "operand", "operator"])
        style = rng.choice(STEP_STYLES)
        for i, step in enumerate(truth):
            op, operand = step.op, step.operand
            left = value
            if i == k and kind == "operand":
                operand = max(1, operand + rng.choice([-3, -2, -1, 1, 2, 3]))
            if i == k and kind == "operator":
                op = "+" if op == "-" else "-"
            result = {"+": left + operand, "-": left - operand, "*": left * operand}.get(op, left)
            if i == k and kind == "result":
                result += rng.choice([-10, -2, -1, 1, 2, 10])
            lines.append((style[0] if i == 0 else style[1]) + Step(left, op, operand, result).line())
            value = result if rng.random() < 0.8 else step.result  # mostly carry the error forward
        lines.append(answer_line(value))
        if value != truth[-1].result:
            return "\n".join(lines)
    raise RuntimeError("could not corrupt the solution")


def make_teacher_inputs(
    out: Path, n_problems: int, wrong_per_problem: int = 1, *, seed: int = 0, correct_per_problem: int = 1
) -> tuple[Path, Path, Path]:
    """Write problems, samples (wrong + correct predictions) and a tokenizer under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    problems = generate_problems(n_problems, seed, ArithSpec(), split="train")
    rng = random.Random(seed)
    rows = []
    for p in problems:
        preds = [(corrupt(p.question, rng), False) for _ in range(wrong_per_problem)]
        preds += [(p.reference_solution, True)] * correct_per_problem
        for k, (text, correct) in enumerate(preds):
            rows.append({
                "sample_id": f"{p.id}#{k}", "problem_id": p.id, "sample_index": k,
                "prompt": PROMPT_TEMPLATE.format(question=p.question), "completion": text, "token_ids": [],
                "num_tokens": 0, "finish_reason": "stop", "pred_answer": text.rsplit(" ", 1)[-1],
                "gold_answer": p.answer, "correct": correct, "backend": "synthetic", "temperature": 0.7,
                "top_p": 0.95, "seed": seed,
            })
    samples_path, problems_path, tok_dir = out / "samples.parquet", out / "problems.parquet", out / "tokenizer"
    write_parquet(pa.Table.from_pylist(rows, schema=SAMPLES), samples_path, SAMPLES)
    write_parquet(problems_table(problems), problems_path, PROBLEMS)
    texts = [r["prompt"] for r in rows] + [r["completion"] for r in rows]
    train_tokenizer(texts, vocab_size=320).save_pretrained(str(tok_dir))
    return samples_path, problems_path, tok_dir


# -- the oracle behind an HTTP API: parse the default prompts back ---------------------------------
_SECTIONS = re.compile(
    r"Problem: (?P<question>.*?)\n\nCorrect solution:\n(?P<reference>.*?)\n\nPrediction:\n(?P<prediction>.*?)\n\n",
    re.DOTALL,
)
_LABEL_PREFIX = re.compile(r"^\[\d+\] ")
UNREADABLE = "I cannot read this prompt."


@dataclass(frozen=True)
class TeacherPrompt:
    """What the teacher's default prompt (the last user message) asks, read back from its text."""

    first_error: bool  # True: "which step is the first wrong one?"; False: "continue after the kept steps"
    question: str
    reference: list[str]  # the numbered steps, labels removed
    prediction: list[str]
    kept: list[str]  # the steps written after "Correct prediction:" (completion prompts)


def read_teacher_prompt(messages: list[dict]) -> TeacherPrompt | None:
    """The request in the teacher's default prompt, or None when the last user message is not one."""

    def steps(block: str) -> list[str]:
        return [_LABEL_PREFIX.sub("", line).strip() for line in block.splitlines() if line.strip()]

    text = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    m = _SECTIONS.search(text)
    if m is None:
        return None
    kept_text = text.rsplit("Correct prediction:\n", 1)[1] if "Correct prediction:\n" in text else ""
    return TeacherPrompt("first wrong" in text, m.group("question"), steps(m.group("reference")),
                         steps(m.group("prediction")), [line for line in kept_text.splitlines() if line.strip()])


def reference_responder(first_wrong_step, continuation):
    """A responder for the fake server that answers from the prompt's reference solution:
    ``first_wrong_step(reference, prediction)`` (-1: correct) and ``continuation(reference, n_kept)``."""

    def respond(messages: list[dict], request: dict) -> str:
        p = read_teacher_prompt(messages)
        if p is None:
            return UNREADABLE
        if p.first_error:
            k = first_wrong_step(p.reference, p.prediction)
            return "correct" if k < 0 else f"[{k}]"
        return "\n".join(continuation(p.reference, len(p.kept)))

    return respond


def oracle_responder(messages: list[dict], request: dict) -> str:
    """Answer the teacher's default first-error or completion prompt as the oracle would."""
    p = read_teacher_prompt(messages)
    if p is None:
        return UNREADABLE
    if p.first_error:
        k = oracle.first_error_step(p.question, p.prediction)
        return "correct" if k < 0 else f"[{k}]"
    fixed = oracle.minimal_rewrite(p.question, p.prediction, len(p.kept))
    return "\n".join(fixed[len(p.kept):])
