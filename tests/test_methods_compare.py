"""Baselines/ablations as transformations of the labels, the oracle's wrong-step count, the comparison table."""

from __future__ import annotations

import math
import json

import pyarrow as pa
import pyarrow.parquet  # noqa: F401  (pa.parquet)
import pytest

from rlmec_core.compare import build_comparison, build_sweep, mean_wrong_steps
from rlmec_core.io import write_parquet
from rlmec_core.methods import METHODS, get_method, method_examples
from rlmec_core.schemas import PROBLEMS, SAMPLES
from rlmec_core.stages.data import problems_table
from rlmec_core.tasks.arith import ArithSpec, generate_problems
from rlmec_core.teacher.oracle import wrong_steps
from rlmec_core.train.rl import RLExample

GOOD = RLExample([1], [5, 6, 7], [0.3, 0.4, 0.5], [-1.0, -1.0, -1.0], [5, 6, 7], [0.5, 0.5, 0.5])
BAD = RLExample([1], [5, 8], [0.0, -0.1], [-1.0, -2.0], [5, 9, 7], [0.5, 1.0, 1.0])


def test_each_method_changes_only_what_it_names():
    ex, ok = [GOOD, BAD], [True, False]
    rlmec = method_examples(get_method("rlmec"), ex, ok)
    assert rlmec == ex
    assert method_examples(get_method("rlmec_teacher_rewrites"), ex, ok) == ex  # differs by its label file
    inst = method_examples(get_method("instance_rl"), ex, ok, instance_rewards=(1.0, -1.0))
    assert [e.rewards for e in inst] == [[1.0] * 3, [-1.0] * 2]
    assert [e.imitation_weights for e in inst] == [GOOD.imitation_weights, BAD.imitation_weights]  # keeps imitation
    inst_no_im = method_examples(get_method("instance_rl_no_imitation"), ex, ok, instance_rewards=(1.0, -1.0))
    assert [e.rewards for e in inst_no_im] == [[1.0] * 3, [-1.0] * 2]
    assert all(set(e.imitation_weights) == {0.0} for e in inst_no_im)
    no_im = method_examples(get_method("rlmec_no_imitation"), ex, ok)
    assert [e.rewards for e in no_im] == [GOOD.rewards, BAD.rewards]
    assert all(set(e.imitation_weights) == {0.0} for e in no_im)
    im_only = method_examples(get_method("rlmec_imitation_only"), ex, ok)
    assert all(set(e.rewards) == {0.0} for e in im_only)
    assert [e.imitation_weights for e in im_only] == [GOOD.imitation_weights, BAD.imitation_weights]
    rft = method_examples(get_method("rft"), ex, ok)
    assert len(rft) == 1 and rft[0].imitation_ids == GOOD.token_ids and rft[0].imitation_weights == [1.0] * 3
    assert set(rft[0].rewards) == {0.0}
    with pytest.raises(ValueError, match="keeps none"):
        method_examples(get_method("rft"), [BAD], [False])
    with pytest.raises(ValueError, match="does not train"):
        method_examples(get_method("sft"), ex, ok)
    with pytest.raises(ValueError, match="gold solutions, not on labelled samples"):
        method_examples(get_method("sft_gold"), ex, ok)
    with pytest.raises(ValueError, match="unknown method 'ppo'"):
        get_method("ppo")
    assert {"sft", "sft_gold", "rft", "instance_rl", "instance_rl_no_imitation", "dpo", "rlmec", "rlmec_no_imitation",
            "rlmec_imitation_only", "rlmec_teacher_rewrites"} == set(METHODS)


def test_wrong_steps_counts_each_local_mistake_once():
    q = "Tom has 15 eggs. He finds 10 more. He sells 14. He loses 9. How many eggs does Tom have now?"
    ref = ["We get 15 + 10 = 25", "So 25 - 14 = 11", "So 11 - 9 = 2", "The answer is 2"]
    assert wrong_steps(q, ref) == 0
    assert wrong_steps(q, ["10 + 15 = 25", *ref[1:]]) == 0  # either operand order for +
    # a miscomputed first step carried forward consistently is one mistake, and the answer follows it
    assert wrong_steps(q, ["15 + 10 = 26", "So 26 - 14 = 12", "So 12 - 9 = 3", "The answer is 3"]) == 1
    # miscomputed and then not carried: two mistakes (the second step starts from another value)
    assert wrong_steps(q, ["15 + 10 = 26", *ref[1:]]) == 2
    assert wrong_steps(q, [ref[0], "So 25 - 41 = -16", "So -16 - 9 = -25", "The answer is -25"]) == 1  # miscopied
    assert wrong_steps(q, [ref[0], "So 25 + 14 = 39", "So 39 - 9 = 30", "The answer is 30"]) == 1  # operator
    assert wrong_steps(q, [*ref[:3], "The answer is 5"]) == 1
    assert wrong_steps(q, ref[:2]) == 2  # a missing step and the missing answer line
    assert wrong_steps(q, ["I think so", *ref[1:]]) == 1
    with pytest.raises(ValueError):
        wrong_steps("What is the capital of France?", ref)


def _run(tmp_path, problems, policy, test_acc, val_acc, completions, *, wall=10.0, tokens=1000):
    d = tmp_path / policy
    d.mkdir()
    metrics = {}
    for split, acc in (("test", test_acc), ("validation", val_acc)):
        (d / f"{split}.json").write_text(json.dumps({"accuracy": acc, "total": 1000}))
        metrics[split] = str(d / f"{split}.json")
    rows = [{"sample_id": f"{p.id}#0", "problem_id": p.id, "sample_index": 0, "prompt": p.question,
             "completion": c, "token_ids": [], "num_tokens": 0, "finish_reason": "stop", "pred_answer": None,
             "gold_answer": p.answer, "correct": False, "backend": "hf", "temperature": 0.0, "top_p": 1.0, "seed": 0}
            for p, c in zip(problems, completions, strict=True)]
    write_parquet(pa.Table.from_pylist(rows, schema=SAMPLES), d / "pred.parquet", SAMPLES)
    (d / "model").mkdir()
    (d / "model" / "rlmec_model.json").write_text(json.dumps({"wall_seconds": wall, "tokens_seen": tokens}))
    return {"policy": policy, "model": str(d / "model"), "metrics": metrics, "predictions": str(d / "pred.parquet")}


def test_comparison_table_statistics_and_verdict(tmp_path):
    problems = generate_problems(4, 0, ArithSpec(), split="test")
    write_parquet(problems_table(problems), tmp_path / "test.parquet", PROBLEMS)
    right = [p.reference_solution for p in problems]
    one_wrong = [*right[:3], "x"]  # an unparseable solution: one wrong step + a missing answer line etc.
    runs = [
        {"method": "sft", "seed": s, **_run(tmp_path, problems, f"sft{s}", 0.40, 0.35, one_wrong)} for s in (0, 1)
    ] + [
        {"method": "rlmec", "seed": s, **_run(tmp_path, problems, f"rlmec{s}", acc, 0.7, right)}
        for s, acc in ((0, 0.70), (1, 0.72))
    ] + [
        {"method": "instance_rl", "seed": s, **_run(tmp_path, problems, f"inst{s}", acc, 0.6, right)}
        for s, acc in ((0, 0.69), (1, 0.71))
    ]
    out = build_comparison(runs, test_problems=tmp_path / "test.parquet", out_md=tmp_path / "t.md",
                           out_json=tmp_path / "t.json", out_png=tmp_path / "c.png",
                           rl_cfg={"train": {"epochs": 2, "lr": 2e-3}})
    m = out["methods"]
    assert m["rlmec"]["test_mean"] == pytest.approx(0.71) and m["rlmec"]["test_std"] == pytest.approx(0.01414, abs=1e-4)
    assert m["sft"]["test_std"] == 0.0 and m["rlmec"]["validation_mean"] == pytest.approx(0.7)
    assert m["rlmec"]["wrong_steps_per_solution"] == 0.0
    expected_sft_ws = sum(wrong_steps(p.question, [ln for ln in c.splitlines() if ln.strip()])
                          for p, c in zip(problems, one_wrong, strict=True)) / 4
    assert m["sft"]["wrong_steps_per_solution"] == pytest.approx(expected_sft_ws) and expected_sft_ws > 0
    assert out["rlmec_vs"]["sft"]["rlmec_better_beyond_noise"]
    assert not out["rlmec_vs"]["instance_rl"]["rlmec_better_beyond_noise"]  # 0.71 vs 0.70 is noise
    assert out["rlmec_beats_every_instance_level_method"] is False
    md = (tmp_path / "t.md").read_text()
    assert "| `rlmec` | 2 |  | 71.0 +- 1.4 | 70.0 |" in md and "within noise" in md and "beyond noise: no" in md
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "t.json").read_text())["methods"].keys() == m.keys()
    runs[0]["metrics"]["test"] = str(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        build_comparison(runs, test_problems=tmp_path / "test.parquet", out_md=tmp_path / "u.md",
                         out_json=tmp_path / "u.json", out_png=tmp_path / "u.png")
    assert not (tmp_path / "u.md").exists()


def test_wrong_steps_of_another_task_is_none(tmp_path):
    rows = [{"sample_id": "q#0", "problem_id": "q", "sample_index": 0, "prompt": "", "completion": "Paris",
             "token_ids": [], "num_tokens": 0, "finish_reason": "stop", "pred_answer": None, "gold_answer": "Paris",
             "correct": True, "backend": "hf", "temperature": 0.0, "top_p": 1.0, "seed": 0}]
    write_parquet(pa.Table.from_pylist(rows, schema=SAMPLES), tmp_path / "p.parquet", SAMPLES)
    assert mean_wrong_steps(tmp_path / "p.parquet", {"q": "What is the capital of France?"}) is None


def test_sweep_picks_the_best_validation_lr_and_flags_a_config_that_does_not_use_it(tmp_path):
    def metrics(name, acc, split="validation"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"data": f"data/arith/{split}.parquet", "accuracy": acc, "total": 300}))
        return str(path)

    runs = [{"method": "dpo", "lr": lr, "policy": f"dpo_lr{lr:g}_s0", "metrics": metrics(f"d{lr:g}", acc)}
            for lr, acc in ((1e-4, 0.40), (5e-4, 0.45), (2e-3, 0.02))]
    runs += [{"method": "rft", "lr": lr, "policy": f"rft_lr{lr:g}_s0", "metrics": metrics(f"r{lr:g}", acc)}
             for lr, acc in ((1e-4, 0.30), (5e-4, 0.30), (2e-3, 0.35))]
    out = build_sweep(runs, in_use={"dpo": 5e-4, "rft": 1e-4}, seed=0, out_md=tmp_path / "s.md",
                      out_json=tmp_path / "s.json")
    assert out["methods"]["dpo"]["best_lr"] == 5e-4 and out["methods"]["dpo"]["in_use_is_best"]
    assert out["methods"]["rft"]["best_lr"] == 2e-3 and not out["methods"]["rft"]["in_use_is_best"]
    md = (tmp_path / "s.md").read_text()
    assert "| `dpo` | 40.0 | **45.0** | 2.0 | 0.0005 | 0.0005 |" in md
    assert "| `rft` | 30.0 | 30.0 | **35.0** | 0.002 | 0.0001 (**not the best**) |" in md
    # ties go to the smaller lr
    tie = build_sweep(runs[3:5], in_use={}, seed=0, out_md=tmp_path / "t.md", out_json=tmp_path / "t.json")
    assert tie["methods"]["rft"]["best_lr"] == 1e-4 and tie["methods"]["rft"]["in_use"] is None
    # the sweep never reads test metrics
    bad = [{**runs[0], "metrics": metrics("test", 0.9, split="test")}]
    with pytest.raises(ValueError, match="validation split"):
        build_sweep(bad, in_use={}, seed=0, out_md=tmp_path / "u.md", out_json=tmp_path / "u.json")
    assert not (tmp_path / "u.md").exists()


def test_attribution_isolates_the_parts_of_rlmec(tmp_path):
    """The pairs that isolate one part of RLMEC, with the same noise test as the verdict: here the RL term
    adds nothing beyond noise on top of imitation, while the imitation term does."""
    problems = generate_problems(4, 0, ArithSpec(), split="test")
    write_parquet(problems_table(problems), tmp_path / "test.parquet", PROBLEMS)
    right = [p.reference_solution for p in problems]
    accs = {"rlmec": (0.70, 0.72), "rlmec_imitation_only": (0.69, 0.71), "rlmec_no_imitation": (0.40, 0.42),
            "instance_rl": (0.41, 0.40), "sft_gold": (0.71, 0.73)}
    runs = [{"method": name, "seed": s, **_run(tmp_path, problems, f"{name}{s}", acc, 0.5, right)}
            for name, pair in accs.items() for s, acc in enumerate(pair)]
    out = build_comparison(runs, test_problems=tmp_path / "test.parquet", out_md=tmp_path / "t.md",
                           out_json=tmp_path / "t.json", out_png=tmp_path / "c.png")
    pairs = {(p["a"], p["b"]): p for p in out["attribution"]}
    # the pairs whose two methods ran; reward granularity is rlmec - instance_rl (both keep the imitation term),
    # never rlmec_no_imitation - instance_rl (that pair would compare lambda = 0 with lambda = 1)
    assert set(pairs) == {("rlmec", "sft_gold"), ("rlmec", "instance_rl"), ("rlmec", "rlmec_imitation_only"),
                          ("rlmec", "rlmec_no_imitation")}
    assert "both with the imitation term" in pairs[("rlmec", "instance_rl")]["question"]
    assert pairs[("rlmec", "sft_gold")]["difference"] == pytest.approx(-0.01)
    assert not pairs[("rlmec", "sft_gold")]["a_better_beyond_noise"]
    rl_term = pairs[("rlmec", "rlmec_imitation_only")]
    assert rl_term["difference"] == pytest.approx(0.01) and not rl_term["a_better_beyond_noise"]
    # its standard error: seed variance + binomial variance of a 1000-problem test set, per mean
    var = [(0.02 ** 2 / 2 + m * (1 - m) / 1000) / 2 for m in (0.71, 0.70)]
    assert rl_term["se"] == pytest.approx(math.sqrt(sum(var)))
    assert pairs[("rlmec", "rlmec_no_imitation")]["a_better_beyond_noise"]
    md = (tmp_path / "t.md").read_text()
    assert "## Where the difference comes from" in md
    assert "the RL term on top of the imitation term (`rlmec` - `rlmec_imitation_only`): +1.0 +- " in md


def test_attribution_pairs_differ_in_exactly_one_part():
    """Each attribution pair changes one thing of rlmec_core.methods.Method (or compares with sft_gold)."""
    from rlmec_core.compare import ATTRIBUTION

    fields = ("labels", "reward", "imitation")
    for question, a, b in ATTRIBUTION:
        if "sft_gold" in (a, b):
            continue
        ma, mb = get_method(a), get_method(b)
        changed = [f for f in fields if getattr(ma, f) != getattr(mb, f)]
        assert len(changed) == 1, f"{question}: {a} vs {b} differ in {changed}"
    granularity = [(a, b) for q, a, b in ATTRIBUTION if "reward per sample" in q]
    assert granularity == [("rlmec", "instance_rl"), ("rlmec_no_imitation", "instance_rl_no_imitation")]


def test_test_accuracy_per_kind_of_problem(tmp_path):
    """With a hard tier (task.synth.hard), the table adds accuracy on problems within the main spec and beyond it."""
    from rlmec_core.tasks.arith import Tier, generate_splits, within_spec

    main = ArithSpec()
    hard = ArithSpec(operators=("+", "-", "*"), mul_max=9, max_value=999, operand_min=70, operand_max=99)
    problems = generate_splits({"test": 8}, 0, main, tier=Tier(0.5, hard))["test"]
    write_parquet(problems_table(problems), tmp_path / "test.parquet", PROBLEMS)
    is_main = [within_spec(p.question, main) for p in problems]
    assert sum(is_main) == 4 and not within_spec(problems[is_main.index(False)].question, main)
    run = _run(tmp_path, problems, "sft0", 0.5, 0.5, [p.reference_solution for p in problems])
    rows = pa.Table.from_pylist([{**r, "correct": ok} for r, ok in zip(
        pa.parquet.read_table(run["predictions"]).to_pylist(), is_main, strict=True)], schema=SAMPLES)
    write_parquet(rows, run["predictions"], SAMPLES)  # every main problem right, every hard one wrong
    synth = {"max_value": 60, "operand_max": 20, "hard": {"share": 0.5, "operand_min": 70}}
    out = build_comparison([{"method": "sft", "seed": 0, **run}], test_problems=tmp_path / "test.parquet",
                           out_md=tmp_path / "t.md", out_json=tmp_path / "t.json", out_png=tmp_path / "c.png",
                           synth=synth)
    assert out["methods"]["sft"]["test_by_kind"] == {"hard": 0.0, "main": 1.0}
    md = (tmp_path / "t.md").read_text()
    assert "test % by kind of problem |" in md and "| hard 0.0, main 100.0 |" in md
    plain = build_comparison([{"method": "sft", "seed": 0, **run}], test_problems=tmp_path / "test.parquet",
                             out_md=tmp_path / "u.md", out_json=tmp_path / "u.json", out_png=tmp_path / "u.png",
                             synth={"max_value": 60})  # no hard tier: no column
    assert plain["methods"]["sft"]["test_by_kind"] == {} and "by kind" not in (tmp_path / "u.md").read_text()
