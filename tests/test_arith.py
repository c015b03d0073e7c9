"""The embedded demo task: seeded generation, knobs, parsing back, and judging."""

from __future__ import annotations

import pytest

from rlmec_core.tasks import get_adapter
from rlmec_core.tasks.arith import (
    STEP_STYLES,
    ArithSpec,
    apply_op,
    generate_problems,
    generate_splits,
    parse_question,
    read_step_line,
    solve,
)

SPEC = ArithSpec(min_steps=2, max_steps=4, operand_max=40, max_value=200, mul_max=5, operators=("+", "-", "*", "/"))


def test_same_seed_same_problems_and_different_seed_different():
    a = generate_problems(200, 7, SPEC, split="test")
    b = generate_problems(200, 7, SPEC, split="test")
    c = generate_problems(200, 8, SPEC, split="test")
    assert a == b
    assert [p.question for p in a] != [p.question for p in c]


def test_reference_solutions_follow_the_format_and_are_correct():
    adapter = get_adapter("arith")
    for p in generate_problems(300, 1, SPEC, split="train"):
        lines = p.reference_solution.splitlines()
        assert lines[-1] == f"The answer is {p.answer}"
        assert 2 <= len(lines) - 1 <= 4
        prefixes = [line[: read_step_line(line).span[0]] for line in lines[:-1]]
        style = next(st for st in STEP_STYLES if st[0] == prefixes[0])  # the first line names the style
        assert all(prefix == style[1] for prefix in prefixes[1:])
        for line in lines[:-1]:
            parsed = read_step_line(line)
            left, op, right, result = parsed.equation
            assert parsed.span[1] == len(line)
            assert apply_op(left, op, right) == result
            assert 0 <= result <= SPEC.max_value
        assert adapter.is_correct(p.reference_solution, p.answer)
        assert adapter.split_steps(p.reference_solution) == lines


def test_question_parses_back_to_the_solution():
    for p in generate_problems(300, 2, SPEC, split="train"):
        start, ops = parse_question(p.question)
        steps = solve(start, ops)
        lines = p.reference_solution.splitlines()
        assert [read_step_line(line).equation for line in lines[:-1]] == [
            (s.left, s.op, s.operand, s.result) for s in steps
        ]
        assert read_step_line(lines[-1]).answer == steps[-1].result


@pytest.mark.parametrize(
    "spec",
    [
        ArithSpec(min_steps=1, max_steps=1, operand_min=5, operand_max=9, max_value=20, operators=("+",)),
        ArithSpec(min_steps=3, max_steps=3, operand_max=50, max_value=99, operators=("+", "-")),
        ArithSpec(min_steps=2, max_steps=2, operand_max=30, max_value=300, mul_max=3, operators=("-", "*")),
    ],
)
def test_knobs_are_respected(spec):
    for p in generate_problems(20, 3, spec, split="x"):
        start, ops = parse_question(p.question)
        assert spec.min_steps <= len(ops) <= spec.max_steps
        assert spec.operand_min <= start <= spec.operand_max
        assert {op for op, _ in ops} <= set(spec.operators)
        for op, b in ops:
            if op in "+-":
                assert spec.operand_min <= b <= spec.operand_max
            else:
                assert 2 <= b <= spec.mul_max
        assert all(0 <= s.result <= spec.max_value for s in solve(start, ops))


def test_splits_share_no_arithmetic_chain_and_ids_are_unique():
    splits = generate_splits({"test": 300, "validation": 100, "train": 1000}, 0, SPEC)
    chains = {name: {repr(parse_question(p.question)) for p in probs} for name, probs in splits.items()}
    assert not chains["test"] & chains["train"]
    assert not chains["validation"] & chains["train"]
    assert not chains["test"] & chains["validation"]
    ids = [p.id for probs in splits.values() for p in probs]
    assert len(ids) == len(set(ids))


def test_too_small_problem_space_is_a_clear_error():
    tiny = ArithSpec(min_steps=1, max_steps=1, operand_min=2, operand_max=3, max_value=6, operators=("+",))
    with pytest.raises(ValueError, match="distinct problems"):
        generate_problems(500, 0, tiny, split="test")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_steps": 3, "max_steps": 2}, "min_steps"),
        ({"operators": ("^",)}, "operators"),
        ({"operators": ("*",)}, "'\\+' or '-'"),
        ({"operand_max": 500, "max_value": 100}, "max_value"),
    ],
)
def test_bad_spec_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ArithSpec(**kwargs)


def test_parse_question_rejects_foreign_text():
    with pytest.raises(ValueError):
        parse_question("What is the capital of France?")


@pytest.mark.parametrize(
    "prediction, correct",
    [
        ("12 + 5 = 17\nThe answer is 17", True),
        ("12 + 5 = 18\nThe answer is 18", False),
        ("12 + 5 = 17", True),  # no answer line: the last number stands
        ("", False),
    ],
)
def test_adapter_judges_predictions(prediction, correct):
    assert get_adapter("arith").is_correct(prediction, "17") is correct


def test_tiny_arch_rejects_head_sizes_vllm_cannot_run():
    from rlmec_core.models.tiny import TinyArch

    with pytest.raises(ValueError, match="head size hidden_size / num_attention_heads = 16"):
        TinyArch(hidden_size=64, num_attention_heads=4, num_key_value_heads=4)
    with pytest.raises(ValueError, match="divisible"):
        TinyArch(hidden_size=100, num_attention_heads=3, num_key_value_heads=3)
    TinyArch(hidden_size=64, num_attention_heads=2, num_key_value_heads=1)


def test_a_hard_tier_takes_its_share_of_every_split():
    from dataclasses import replace as dc_replace

    from rlmec_core.tasks.arith import Tier

    # start values >= 70 (the main spec's values stay <= 60): every problem shows its tier
    hard = dc_replace(SPEC, operators=("+", "-", "*"), mul_max=9, max_value=999, operand_min=70, operand_max=99)
    tier = Tier(share=0.4, spec=hard)
    sizes = {"test": 200, "validation": 50, "train": 500}
    splits = generate_splits(sizes, 3, SPEC, tier=tier)
    assert splits == generate_splits(sizes, 3, SPEC, tier=tier)  # seeded
    chains = {name: {repr(parse_question(p.question)) for p in probs} for name, probs in splits.items()}
    assert not chains["test"] & chains["train"] and not chains["validation"] & chains["train"]
    for name, probs in splits.items():
        assert [p.id for p in probs] == [f"arith-{name}-{k:06d}" for k in range(sizes[name])]
        is_hard = [parse_question(p.question)[0] >= 70 for p in probs]
        assert sum(is_hard) == round(0.4 * sizes[name])
        assert 0 < sum(is_hard[: len(probs) // 2]) < sum(is_hard)  # mixed, not appended
    with pytest.raises(ValueError, match="share"):
        Tier(share=1.0, spec=hard)


def test_hard_tier_from_config_overrides_the_main_spec():
    from rlmec_core.errors import ConfigError
    from rlmec_core.stages.data import hard_tier

    synth = {"max_value": 60, "operand_max": 20, "operators": ["+", "-"], "hard": {"share": 0.5, "max_value": 999}}
    tier = hard_tier(synth)
    assert tier.share == 0.5 and tier.spec.max_value == 999 and tier.spec.operand_max == 20
    assert tier.spec.operators == ("+", "-")
    assert hard_tier({"max_value": 60}) is None and hard_tier({"hard": None}) is None
    with pytest.raises(ConfigError, match="task.synth.hard"):
        hard_tier({"max_value": 60, "operand_max": 20, "hard": {"share": 0.5, "max_value": 10}})
