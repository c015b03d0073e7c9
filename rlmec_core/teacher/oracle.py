"""The programmatic teacher of the demo task: exact first-error detection and minimal rewrites.

It recomputes every step of a prediction against the problem (``rlmec_core.tasks.arith``), so it knows
the first wrong step for certain, and it fixes that step and the ones after it by changing numbers and
operators inside the prediction's own lines, keeping their wording. Compare ``replace_rest``, the
cruder rewrite that keeps the steps before the error and pastes the reference solution after it.

Line conventions (``TaskAdapter.split_steps``): a prediction is a list of non-blank lines; with ``n``
operations in the problem, lines ``0..n-1`` must each hold the right equation (either operand order for
``+`` and ``*``) and line ``n`` must be ``The answer is <result>``; nothing may follow.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlmec_core.tasks.arith import Step, answer_line, apply_op, parse_question, read_step_line, solve

COMMUTATIVE = {"+", "*"}


def expected_steps(question: str) -> list[Step]:
    """The exact steps of a demo question (``ValueError`` if it is not one)."""
    start, ops = parse_question(question)
    return solve(start, ops)


def _equation_ok(line: str, step: Step) -> bool:
    eq = read_step_line(line).equation
    if eq is None:
        return False
    left, op, operand, result = eq
    if op != step.op or result != step.result:
        return False
    return (left, operand) == (step.left, step.operand) or (
        op in COMMUTATIVE and (left, operand) == (step.operand, step.left)
    )


def first_error_step(question: str, steps: Sequence[str]) -> int:
    """Index of the first wrong line of ``steps``; ``-1`` when all are right; ``len(steps)`` when every
    line is right but the solution stops before its answer line."""
    truth = expected_steps(question)
    for i, step in enumerate(truth):
        if i >= len(steps):
            return len(steps)
        if not _equation_ok(steps[i], step):
            return i
    n = len(truth)
    if n >= len(steps):
        return len(steps)
    if read_step_line(steps[n]).answer != truth[-1].result:
        return n
    return n + 1 if len(steps) > n + 1 else -1


def _fixed_line(line: str | None, step: Step) -> str:
    """``line`` with its equation replaced by ``step``'s (its wording kept); the bare equation when the
    line has no equation to fix. Operands stay in the order the line wrote them when that is valid."""
    if line is None:
        return step.line()
    parsed = read_step_line(line)
    if parsed.equation is None or parsed.span is None:
        return step.line()
    left, _, operand, _ = parsed.equation
    a, b = step.left, step.operand
    if step.op in COMMUTATIVE and (left, operand) == (b, a):
        a, b = b, a
    start, end = parsed.span
    return f"{line[:start]}{a} {step.op} {b} = {step.result}{line[end:]}"


def minimal_rewrite(question: str, steps: Sequence[str], error_step: int) -> list[str]:
    """The prediction with lines ``error_step..`` corrected in place (numbers and operators only where
    the line has an equation), missing lines added, surplus lines dropped."""
    truth = expected_steps(question)
    if not 0 <= error_step <= len(steps):
        raise ValueError(f"error_step {error_step} is outside 0..{len(steps)}")
    out = list(steps[:error_step])
    for i in range(error_step, len(truth)):
        out.append(_fixed_line(steps[i] if i < len(steps) else None, truth[i]))
    if len(out) == len(truth):
        n = len(truth)
        kept = read_step_line(steps[n]) if error_step <= n < len(steps) else None
        if kept is not None and kept.answer is not None and kept.span is not None:
            start, end = kept.span
            out.append(f"{kept.text[:start]}{truth[-1].result}{kept.text[end:]}")
        else:
            out.append(answer_line(truth[-1].result))
    return out


def replace_rest(steps: Sequence[str], reference_steps: Sequence[str], error_step: int) -> list[str]:
    """The crude rewrite: the prediction's lines before ``error_step``, then the reference's from there."""
    return [*steps[:error_step], *reference_steps[error_step:]]


def wrong_steps(question: str, steps: Sequence[str]) -> int:
    """How many steps of a solution are wrong *locally*, each mistake counted once (the paper's "wrong
    steps in sampled solutions"): step ``i`` is wrong when it has no equation, uses another operator or
    operand than the problem's ``i``-th operation, does not start from the solution's own previous result,
    or miscomputes; the answer line is wrong when it does not state the solution's own last result; a
    missing step or answer line counts as wrong. A value carried forward from an earlier mistake is not a
    new mistake. Lines after the answer line are ignored."""
    start, ops = parse_question(question)
    wrong, prev = 0, start
    for i, (op, operand) in enumerate(ops):
        if i >= len(steps):
            return wrong + len(ops) - i + 1  # the missing steps and the answer line
        eq = read_step_line(steps[i]).equation
        if eq is None:
            wrong, prev = wrong + 1, None
            continue
        left, o, b, result = eq
        operands_ok = (prev is None or left == prev) and b == operand
        if o in COMMUTATIVE and not operands_ok:
            operands_ok = (prev is None or b == prev) and left == operand
        try:
            computed_ok = apply_op(left, o, b) == result
        except (ValueError, ZeroDivisionError):
            computed_ok = False
        wrong += not (o == op and operands_ok and computed_ok)
        prev = result
    n = len(ops)
    if n >= len(steps):
        return wrong + 1
    answer = read_step_line(steps[n]).answer
    return wrong + (answer is None or (prev is not None and answer != prev))
