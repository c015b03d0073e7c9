"""The run report (rlmec_core.report): HTML/Markdown content, colours, escaping, figures, errors."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from rlmec_core.calibration import calibration_table
from rlmec_core.cli import main as cli_main
from rlmec_core.errors import DataError
from rlmec_core.io import read_json, write_parquet
from rlmec_core.report import (
    DRAW_ROLES,
    STAGE_FILES,
    build_report,
    count_draw,
    data_funnel,
    eval_paths_by_policy,
    find_run_inputs,
    select_examples,
)
from rlmec_core.rewards import step_reward_sums, token_rewards
from rlmec_core.schemas import SAMPLES, TOKEN_REWARDS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(sample_id: str, tokens: list[str], probs: list[float], correct: bool, z_tokens: list[str],
         z_weights: list[float], error_step: int, question: str) -> dict[str, Any]:
    rewards = token_rewards(probs, correct)
    return {
        "sample_id": sample_id,
        "problem_id": sample_id.split("#")[0],
        "question": question,
        "reference_solution": "7 & 2 = 14\nThe answer is 14",
        "gold_answer": "14",
        "prompt": f"Q: {question}\nA:",
        "prompt_ids": [1, 5, 6],
        "prediction": "".join(tokens),
        "correct": correct,
        "error_step": error_step,
        "rewrite": "".join(z_tokens),
        "rewrite_source": "passthrough" if correct else "grm",
        "token_ids": list(range(10, 10 + len(tokens))),
        "tokens": tokens,
        "grm_probs": probs,
        "rewards": rewards,
        "old_logprobs": [-0.5] * len(tokens),
        "step_rewards": step_reward_sums(tokens, rewards),
        "imitation_ids": list(range(50, 50 + len(z_tokens))),
        "imitation_tokens": z_tokens,
        "imitation_weights": z_weights,
        "edit_distance": sum(w > 0.5 for w in z_weights),
        "edit_ratio": sum(w > 0.5 for w in z_weights) / max(len(tokens), len(z_tokens)),
    }


def token_reward_rows() -> list[dict[str, Any]]:
    """Five labelled samples (3 incorrect, 2 correct) whose tokens hold ``<``, ``&`` and newlines."""
    q = "Is 5 < 7 & what is 7 & 2? <script>alert(1)</script>"
    wrong_y = ["5", " <", " 7", "\n", "7", " &", " 2", " =", " 9", "\n", "The answer is", " 9"]
    wrong_p = [0.9, 0.8, 0.95, 0.99, 0.9, 0.7, 0.6, 0.5, 0.4, 0.9, 0.97, 0.2]
    z = ["5", " <", " 7", "\n", "7", " &", " 2", " =", " 14", "\n", "The answer is", " 14"]
    zw = [0.5] * 8 + [1.0, 0.5, 0.5, 1.0]
    right_y = ["<b>", "7", " & 2", " = 14", "\n", "The answer is", " 14"]
    right_p = [0.55, 0.9, 0.99, 0.8, 0.6, 0.99, 0.7]
    return [
        _row("p0#0", wrong_y, wrong_p, False, z, zw, 1, q),
        _row("p1#0", right_y, right_p, True, right_y, [0.5] * len(right_y), -1, "What is 7 & 2?"),
        _row("p2#3", ["7 & 2 = 15\n", "The answer is 15"], [0.35, 0.45], False,
             ["7 & 2 = 14\n", "The answer is 14"], [1.0, 1.0], 0, "Seven & two?"),
        _row("p3#1", ["14"], [0.8], True, ["14"], [0.5], -1, "Plain"),
        _row("p4#2", ["x <", " y\n", "\n", "The answer is 1"], [0.49, 0.3, 0.5, 0.0], False,
             ["x <", " z\n", "\n", "The answer is 14"], [0.5, 1.0, 0.5, 1.0], 0, "Line\nbreaks & <tags>"),
    ]


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


EVALS = {
    ("sft", "validation"): (0.35, 0.26, 0.45, 35, 100),
    ("sft", "test"): (0.40, 0.30, 0.50, 40, 100),
    ("rlmec", "validation"): (0.38, 0.29, 0.48, 38, 100),
    ("rlmec", "test"): (0.62, 0.52, 0.71, 62, 100),
    ("sft_gold", "validation"): (0.36, 0.27, 0.46, 36, 100),
    ("sft_gold", "test"): (0.55, 0.45, 0.65, 55, 100),
}


def write_draw(path: Path, correct: int, wrong: int, prompt_too_long: int = 0) -> Path:
    """A ``SAMPLES`` file with that many correct, wrong and never generated (prompt too long) samples."""
    kinds = [("stop", True)] * correct + [("stop", False)] * wrong + [("prompt_too_long", False)] * prompt_too_long
    rows = [{"sample_id": f"p{i}#0", "problem_id": f"p{i}", "sample_index": 0, "prompt": "Q:", "completion": "1",
             "token_ids": [5], "num_tokens": 1, "finish_reason": reason, "pred_answer": "1", "gold_answer": "1",
             "correct": ok, "backend": "hf", "temperature": 1.0, "top_p": 1.0, "seed": i}
            for i, (reason, ok) in enumerate(kinds)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(pa.Table.from_pylist(rows, schema=SAMPLES), path, SAMPLES)
    return path


# The crafted funnel: every arrow's count follows from the one before, what it drops and what enters beside it.
# Teacher draw: 20 samples (8 correct, 11 wrong, 1 prompt too long); 9 distinct wrong texts sent (2 repeats),
# 7 verified (1 wrong answer, 1 parse error); GRM data: 2 x 7 rows + 5 of the 6 distinct correct texts.
# RL draw: 30 samples (12 correct, 18 wrong); 15 distinct wrong texts (3 repeats), 3 verified by the GRM
# (9 wrong answers, 2 parse errors, 1 filtered); labels: 3 wrong + 4 distinct correct - 1 duplicate - 1 too long.
FUNNEL_COUNTS = [20, 11, 7, 19, 30, 18, 3, 5, 4321]
CALIBRATION_PROBS = [0.05, 0.05, 0.3, 0.45, 0.6, 0.95, 0.97, 0.99, 1.0, 1.0]
CALIBRATION_EDITED = [True, False, True, True, False, True, False, False, False, False]


def make_run(root: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    """A fake results/<run>/ with every file the report reads."""
    run = root / "results" / "fake"
    for (policy, split), (acc, lo, hi, k, n) in EVALS.items():
        write_json(run / "eval" / policy / split / "metrics.json",
                   {"accuracy": acc, "ci_low": lo, "ci_high": hi, "correct": k, "total": n, "backend": "hf",
                    "confidence": 0.95})
    calibration = {"bins": 10, "wrong_predictions": calibration_table(CALIBRATION_PROBS, CALIBRATION_EDITED),
                   "all_predictions": calibration_table(CALIBRATION_PROBS + [1.0] * 5, CALIBRATION_EDITED + [False] * 5)}
    write_json(run / "grm" / "quality.json",
               {"error_step_accuracy": 0.8125, "rewrite_exact_match": 0.5, "rewrite_answer_correct": 0.9,
                "rewrite_mean_edit_ratio": 0.12, "token_flag_precision": 0.7, "token_flag_recall": 0.6,
                "token_flag_f1": 0.646, "correct_tokens_flagged": 0.03, "token_flag_recall_first_error_step": None,
                "validation_wrong": 16, "validation_correct": 9, "calibration": calibration})
    write_draw(run / "samples" / "sft" / "teacher.parquet", correct=8, wrong=11, prompt_too_long=1)
    write_draw(run / "samples" / "sft" / "rl.parquet", correct=12, wrong=18)
    write_json(run / "teacher" / "metrics.json",
               {"samples": 20, "distinct_predictions": 15, "passthrough_correct": 6, "sent_to_teacher": 9,
                "statuses": {"ok": 7, "wrong_answer": 1, "parse_error": 1, "api_error": 0, "filtered": 0},
                "teacher_model": "oracle <x>", "mean_edit_ratio": 0.2})
    write_json(run / "grm" / "data_stats.json",
               {"rewrites_rows": 15, "examples": 19,
                "train": {"error_step": 5, "rewrite_of_wrong": 5, "rewrite_of_correct": 4},
                "validation": {"error_step": 2, "rewrite_of_wrong": 2, "rewrite_of_correct": 1}})
    write_json(run / "grm" / "rewrites_metrics.json",
               {"samples": 30, "distinct_predictions": 19, "wrong": 15, "prompt_too_long": 1,
                "statuses": {"ok": 3, "wrong_answer": 9, "parse_error": 2, "api_error": 0, "filtered": 1},
                "mean_edit_ratio": 0.15})
    write_json(run / "label" / "metrics.json",
               {"rewrite_rows": 19, "correct_duplicates": 1, "wrong_without_rewrite": 12, "too_long": 1, "labelled": 5,
                "labelled_correct": 2, "labelled_wrong": 3, "reward_tokens": 26, "rewrites": "results/fake/grm/rewrites.parquet",
                "reward": {"mean_neg": -0.04, "mean_pos": 0.31}})
    steps = range(10, 60, 10)
    val = {20: 0.3, 40: 0.45, 50: 0.4}  # in-training validation of the bootstrap (best at step 40)
    write_jsonl(run / "train_logs" / "policy_sft.jsonl",
                [{"step": s, "epoch": s / 20, "loss": 3.0 / s, "lr": 1e-3, "grad_norm": 1.0,
                  **({"val_accuracy": val[s], "best_step": 40 if s >= 40 else 20} if s in val else {})} for s in steps])
    write_jsonl(run / "train_logs" / "sft_gold.jsonl", [{"step": s, "loss": 0.5 / s, "lr": 1e-3} for s in steps])
    write_jsonl(run / "train_logs" / "grm.jsonl", [{"step": s, "loss": 2.0 / s, "lr": 2e-5} for s in steps])
    write_jsonl(run / "train_logs" / "rl.jsonl",
                [{"step": s, "loss": 1.0 / s, "lr": 5e-6, "loss_rl": 0.1 / s, "loss_ir": 0.9 / s,
                  "clip_frac": 0.01 * s, "ratio_mean": 1.0, "approx_kl": 1e-4 * s, "grad_norm": None,
                  "examples_seen": s // 5, "tokens_seen": 4321 * s // 50, "epoch": s / 25} for s in steps])
    table = pa.Table.from_pylist(token_reward_rows() if rows is None else rows, schema=TOKEN_REWARDS)
    write_parquet(table, run / "label" / "token_rewards.parquet", TOKEN_REWARDS)
    write_json(run / "checks" / "preflight.json", {"checks": [
        {"name": "grm_rewrite_correct", "status": "green", "figure": "90.0% of 16 held-out wrong predictions",
         "threshold": ">= 0.5%", "key": "grm.min_rewrite_correct", "stops": True, "message": "fine <ok>."},
        {"name": "label_wrong_reward_mass", "status": "amber", "figure": "0.04% of sum |r_t| on wrong samples",
         "threshold": ">= 1.00%", "key": "label.min_wrong_reward_share", "stops": False,
         "message": "Wrong samples carry 0.04% of the RL term's reward mass: mostly reinforcement."}]})
    return run


def report_args(run: Path, out: Path, check_missing: bool = True, **overrides: Any) -> dict[str, Any]:
    found = find_run_inputs(run)
    assert not found.missing or not check_missing
    args: dict[str, Any] = dict(
        eval_metrics=found.eval_metrics, grm_quality=found.grm_quality, stage_metrics=found.stage_metrics,
        train_logs=found.train_logs, token_rewards=found.token_rewards, checks=found.checks, out_html=out / "report.html",
        out_md=out / "summary.md", fig_dir=out / "figures", title="Fake <run> & co", n_examples=10, seed=0,
    )
    args.update(overrides)
    return args


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


SPAN = re.compile(r'<span class="(tok[^"]*)"(?: style="background:rgba\((\d+),(\d+),(\d+),([\d.]+)\)")? '
                  r'title="p_t=([\d.]+) r_t=([+-][\d.]+)">(.*?)</span>', re.S)


def test_report_content(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = build_report(**report_args(run, out))
    page = (out / "report.html").read_text()
    md = (out / "summary.md").read_text()
    rewards = {ok: [r for row in token_reward_rows() if row["correct"] == ok for r in row["rewards"]] for ok in (True, False)}
    mass = {ok: sum(abs(r) for r in rs) for ok, rs in rewards.items()}
    mass_share = f"{100 * mass[True] / (mass[True] + mass[False]):.1f}"

    assert "sent to the teacher (oracle &lt;x&gt;)" in page and "sent to the teacher (oracle &lt;x&gt;)" in md

    # sections in reading order, raw metrics last and collapsed
    ids = re.findall(r'<h2 id="([^"]+)"', page)
    assert ids == ["health", "accuracy", "data-funnel", "grm-quality", "token-rewards", "training-curves", "example-solutions",
                   "raw-metrics"]
    assert "Stage metrics" not in page and "Stage metrics" not in md
    raw = page[page.index('<h2 id="raw-metrics">'):]
    assert raw.count("<details") == 1 and "<details open" not in raw and "</details>" in raw
    assert "statuses.parse_error" in raw and "reward.mean_neg" in raw and "train.rewrite_of_correct" in raw
    assert "statuses.parse_error" not in page[:page.index('<h2 id="raw-metrics">')]  # decoded above, raw only here
    links = re.findall(r"^- \[([^\]]+)\]\(([^)]+)\)$", md[md.index("## Raw metrics"):], re.M)
    assert [name for name, _ in links] == ["grm/quality.json", "teacher/metrics.json", "grm/data_stats.json",
                                          "grm/rewrites_metrics.json", "label/metrics.json"]
    assert all((out / link).resolve().is_file() for _, link in links)

    # (a) accuracy with CIs, difference and verdict
    for text in (html.unescape(page), md):
        assert "40.0% [30.0%, 50.0%] (40/100)" in text
        assert "62.0% [52.0%, 71.0%] (62/100)" in text
        assert "+22.0 pp" in text and "+3.0 pp" in text
        assert "On test, RLMEC's accuracy (62.0%) is above SFT's 95% interval [30.0%, 50.0%]." in text
        assert "On validation, RLMEC's accuracy (38.0%) is not above SFT's 95% interval" in text
        # more SFT on gold data: its own column, difference and verdict, and the convergence check
        assert "55.0% [45.0%, 65.0%] (55/100)" in text and "+7.0 pp" in text
        assert "RLMEC − SFT-gold" in text
        assert ("On test, RLMEC's accuracy (62.0%) is not above more SFT on the gold solutions (SFT-gold)'s 95% "
                "interval [45.0%, 65.0%]: no clear improvement.") in text
        assert "moves validation accuracy by +1.0 pp (at most 2 points: converged)" in text
        # GRM quality
        assert "error_step_accuracy" in text and "0.8125" in text
        # the data funnel: counts, what left on the way and why, and where each count comes from
        assert "| wrong samples | 11 samples | 9 distinct texts (per problem) | −8 correct: to the GRM data as they are " \
               "(no rewrite); −1 prompt too long for the policy: no solution | samples/sft/teacher.parquet |" in md
        assert ("| rewritten by the GRM (verified) | 3 distinct texts | of 15 distinct wrong texts, by the GRM trained "
                "on the rows above | −9 rewrite reaches a wrong answer; −3 repeat a wrong text of the same problem (one "
                "rewrite per distinct text); −2 reply not usable (no step label or no continuation); −1 filtered: prompt "
                "too long, or edit ratio above teacher.max_edit_ratio | grm/rewrites_metrics.json |") in md
        assert "−1 correct texts left out to balance the wrong ones (grm.balance_correct)" in text
        assert "2 correct + 3 wrong; 26 tokens of y with a reward r_t" in text
        assert "4,321 tokens" in text and "10 examples in 2 epochs" in text
        # token rewards: counts per kind and the share of the reward mass
        assert re.search(r"\| correct \| 2 \| 8 \| \+0\.\d{4} \| 0\.0% \|", md)
        assert re.search(r"\| wrong \| 3 \| 18 \| -0\.\d{4} \|", md)
        assert f"{mass_share}% of its total weight Σ|r_t| lies on the tokens of correct samples" in text
        # calibration: one row per p_t bucket, tokens and the share the teacher edited
        assert "| [0.00, 0.10) | 2 | 1 | 50.0% | 2 | 50.0% |" in md and "| [0.90, 1.00] | 5 | 1 | 20.0% | 10 | 10.0% |" in md
        assert ("the teacher edited 50.0% of the 2 tokens with p_t in [0.00, 0.10) (calibrated: 95.0%, 1 − their mean "
                "p_t) and 20.0% of the 5 tokens with p_t in [0.90, 1.00] (calibrated: 1.8%).") in text
        # the funnel summed up: what each rewriter's rewrites were verified for, and what the labels hold
        assert ("The teacher's rewrite was verified for 7 of the 9 distinct wrong texts of its draw (77.8%); the main "
                "loss: rewrite reaches a wrong answer (1).") in text
        assert ("The GRM's rewrite was verified for 3 of the 15 distinct wrong texts of the RL draw (20.0%); the "
                "main loss: rewrite reaches a wrong answer (9).") in text
        assert "The labels hold 5 rows: 2 correct samples and 3 wrong ones (60.0% wrong)." in text
    assert result["verdict"] == {"test": "above", "validation": "within", "test vs sft_gold": "within",
                                 "validation vs sft_gold": "within"}
    assert result["accuracy"]["rlmec"]["test"]["accuracy"] == 0.62
    assert result["n_labelled"] == 5

    # (e) exactly min(10, rows) examples, a mix of both kinds
    assert page.count('class="example"') == 5
    assert len(re.findall(r"^### \d+\. ", md, re.M)) == 5
    assert sorted(result["examples"]) == sorted(r["sample_id"] for r in token_reward_rows())
    assert page.count("badge ok") == 2 and page.count("badge bad") == 3

    # escaping: no raw token or question markup reaches the page; newlines become <br>
    assert "<script>" not in page and "<b>" not in page and "<tags>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;" in page
    assert "Fake &lt;run&gt; &amp; co" in page
    assert 'title="p_t=0.550 r_t=+0.050">&lt;b&gt;</span>' in page
    assert '<span class="tok" title="p_t=0.990 r_t=+0.000"><br></span>' in page
    assert 'r_t=-0.100"> 9</span>' in page

    # colours follow the reward sign, intensity its size relative to the clip range
    spans = SPAN.findall(page)
    assert len(spans) == sum(len(r["tokens"]) for r in token_reward_rows())
    seen = set()
    for cls, r_, g, b, alpha, _p, reward, _tok in spans:
        r_t = float(reward)
        if r_t < 0:
            assert cls == "tok neg" and (r_, g, b) == ("220", "38", "38")
            seen.add("neg")
        elif r_t > 0:
            assert cls == "tok pos" and (r_, g, b) == ("22", "163", "74")
            seen.add("pos")
        else:
            assert cls == "tok" and not alpha
        if r_t == -0.1:
            assert float(alpha) == pytest.approx(0.90)
    assert seen == {"neg", "pos"}

    # the rewrite's edited tokens (weight above the row minimum) are highlighted
    assert '<span class="tok edit" title="w=1"> 14</span>' in page
    assert '<span class="tok" title="w=0.5"> 2</span>' in page
    assert "[9|r=-0.10]" in md and "{+14+}" in md
    # a rewrite that changed every token: all edited (the kept weight 0.5 comes from the correct rows)
    assert "{+7 & 2 = 14+}\n{+The answer is 14+}" in md
    assert '<span class="tok edit" title="w=1">7 &amp; 2 = 14<br></span>' in page

    # per-step sums beside each step, first error step marked
    sums = step_reward_sums(token_reward_rows()[0]["tokens"], token_reward_rows()[0]["rewards"])
    assert f"<td>7 &amp; 2 = 9</td><td class=num>{sums[1]:+.3f}</td>" in page
    assert f"| [1] ← first error | 7 &amp; 2 = 9 | {sums[1]:+.3f} |" in md
    assert "# Fake &lt;run&gt; &amp; co" in md and "| [0] | &lt;b&gt;7 &amp; 2 = 14 |" in md

    # one valid PNG per chart and per log, embedded in the HTML and linked relative to the Markdown
    pngs = sorted(p.name for p in (out / "figures").iterdir())
    assert pngs == ["data_funnel.png", "grm.png", "grm_calibration.png", "policy_sft.png", "rl.png", "sft_gold.png",
                    "token_rewards.png"]
    assert sorted(Path(p).name for p in result["figures"]) == pngs
    for name in pngs:
        data = (out / "figures" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) > 5000
    assert page.count('src="data:image/png;base64,iVBORw0KGgo') == 7
    for alt in ("data funnel", "GRM calibration", "token reward distribution"):
        assert f'<img alt="{alt}" src="data:image/png;base64,iVBORw0KGgo' in page
    assert ("policy_sft: grad_norm, loss, lr, val_accuracy against the optimizer step (val_accuracy, the in-training "
            "validation (a point at epoch 0 is the starting policy), against the epoch; the star marks the best "
            "evaluation, whose weights a stage with select: best kept)") in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file()
    assert "loss_ir" in page and "clip_frac" in page and "approx_kl" in page


def funnel_of(run: Path) -> tuple[list[Any], list[str]]:
    """:func:`data_funnel` on the stage files of ``run`` that exist."""
    found = find_run_inputs(run)
    stages = {r: read_json(p) for r, p in found.stage_metrics.items() if r not in DRAW_ROLES}
    draws = {r: count_draw(p) for r, p in found.stage_metrics.items() if r in DRAW_ROLES}
    log = [json.loads(line) for line in found.train_logs["rl"].read_text().splitlines()] if "rl" in found.train_logs else None
    paths = {**found.stage_metrics, **({"rl_log": found.train_logs["rl"]} if "rl" in found.train_logs else {})}
    funnel = data_funnel(stages, draws, log, paths)
    return funnel.steps, funnel.notes


def test_data_funnel_counts_follow_every_arrow(run: Path) -> None:
    assert list(find_run_inputs(run).stage_metrics) == list(STAGE_FILES)  # every role found, in funnel order
    steps, notes = funnel_of(run)
    assert notes == []
    assert [s.count for s in steps] == FUNNEL_COUNTS
    assert [s.lane for s in steps] == [0] * 4 + [1] * 5
    assert count_draw(run / "samples" / "sft" / "teacher.parquet").prompt_too_long == 1
    # what enters a step = what the step before kept - what left on the way + what came beside it (correct texts)
    for i in (1, 2, 5, 6, 7):
        side = steps[i].side_input[0] if steps[i].side_input else 0
        assert steps[i - 1].count - sum(n for n, _ in steps[i].drops) + side == steps[i].count, steps[i].label
    # GRM rows: two per verified rewrite, plus the correct texts the balance kept
    assert 2 * steps[2].count + steps[3].side_input[0] - sum(n for n, _ in steps[3].drops) == steps[3].count
    assert all(n > 0 for s in steps for n, _ in s.drops)
    assert [s.source for s in steps] == ["samples/sft/teacher.parquet", "samples/sft/teacher.parquet",
                                         "teacher/metrics.json", "grm/data_stats.json", "samples/sft/rl.parquet",
                                         "samples/sft/rl.parquet", "grm/rewrites_metrics.json", "label/metrics.json",
                                         "train_logs/rl.jsonl"]


def test_report_says_what_is_missing_and_still_counts_the_rest(run: Path, tmp_path: Path) -> None:
    for rel in ("samples/sft/rl.parquet", "grm/data_stats.json"):
        (run / rel).unlink()
    quality = read_json(run / "grm" / "quality.json")
    del quality["calibration"]  # a quality.json written before the calibration
    write_json(run / "grm" / "quality.json", quality)
    found = find_run_inputs(run)
    assert found.missing == [str(run / "grm" / "data_stats.json"), str(run / "samples" / "sft" / "rl.parquet")]
    out = tmp_path / "out"
    args = report_args(run, out, stage_metrics=found.stage_metrics, check_missing=False)
    result = build_report(**args)
    page = html.unescape((out / "report.html").read_text())
    md = (out / "summary.md").read_text()
    for text in (page, md):
        assert "grm/data_stats.json not given: its counts are left out." in text
        assert "samples/sft/rl.parquet not given: its counts are left out." in text
        assert "| GRM training data rows | missing |" in md
        assert "has no 'calibration'" in text and "rerun the grm_eval stage" in text
    steps, _ = funnel_of(run)
    assert [s.count for s in steps] == [20, 11, 7, None, 30, None, 3, 5, 4321]  # the draw's size from the GRM's metrics
    assert sorted(Path(p).name for p in result["figures"]) == ["data_funnel.png", "grm.png", "policy_sft.png", "rl.png",
                                                              "sft_gold.png", "token_rewards.png"]
    # nothing at all to count: the section says so instead of a chart of empty boxes
    build_report(**report_args(run, tmp_path / "bare", stage_metrics={}, train_logs={}, check_missing=False))
    bare = (tmp_path / "bare" / "report.html").read_text()
    assert "No stage files given: nothing to count." in bare and 'alt="data funnel"' not in bare
    assert "train_logs/rl.jsonl not given" in bare


def test_funnel_follows_the_teacher_rewrites_when_the_labels_use_them(run: Path) -> None:
    """label.rewrites: teacher (an ablation): the labels come from the teacher's rewrites of its own draw."""
    label = read_json(run / "label" / "metrics.json")
    write_json(run / "label" / "metrics.json", {**label, "rewrites": "results/fake/teacher/rewrites.parquet",
                                                "rewrite_rows": 15})
    steps, _ = funnel_of(run)
    assert [s.label for s in steps[4:7]] == ["samples of the teacher draw (label.rewrites: teacher)", "wrong samples",
                                             "rewritten by the teacher (verified)"]
    assert [s.count for s in steps[4:7]] == [20, 11, 7] and steps[7].side_input == (6, "distinct correct texts")
    assert steps[6].source == "teacher/metrics.json"


def test_malformed_stage_files_name_the_file_and_key(run: Path, tmp_path: Path) -> None:
    write_json(run / "teacher" / "metrics.json", {"samples": 20, "sent_to_teacher": 9})
    with pytest.raises(DataError, match=r"teacher/metrics\.json: no 'statuses\.ok'"):
        build_report(**report_args(run, tmp_path / "out"))
    make_run(tmp_path)
    write_json(run / "label" / "metrics.json", {**read_json(run / "label" / "metrics.json"), "labelled": "5"})
    with pytest.raises(DataError, match=r"label/metrics\.json: 'labelled' must be"):
        build_report(**report_args(run, tmp_path / "out"))
    make_run(tmp_path)
    quality = read_json(run / "grm" / "quality.json")
    write_json(run / "grm" / "quality.json", {**quality, "calibration": {"bins": 10}})
    with pytest.raises(DataError, match=r"quality\.json: malformed 'calibration'"):
        build_report(**report_args(run, tmp_path / "out"))
    make_run(tmp_path)
    (run / "samples" / "sft" / "rl.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"rl\.parquet: not a readable Parquet file"):
        build_report(**report_args(run, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_report_is_deterministic_and_respects_n_examples(run: Path, tmp_path: Path) -> None:
    a = build_report(**report_args(run, tmp_path / "a", n_examples=3, seed=5))
    b = build_report(**report_args(run, tmp_path / "b", n_examples=3, seed=5))
    assert a["examples"] == b["examples"] and len(a["examples"]) == 3
    assert (tmp_path / "a" / "report.html").read_text() == (tmp_path / "b" / "report.html").read_text()
    assert (tmp_path / "a" / "report.html").read_text().count('class="example"') == 3
    build_report(**report_args(run, tmp_path / "c", n_examples=3, seed=5, kept_weight=0.5))  # as inferred
    assert (tmp_path / "c" / "report.html").read_text() == (tmp_path / "a" / "report.html").read_text()


def test_select_examples_mixes_correct_and_incorrect() -> None:
    flags = [i % 4 == 0 for i in range(20)]  # 5 correct, 15 incorrect
    chosen = select_examples(flags, 10, seed=1)
    assert len(chosen) == 10 == len(set(chosen)) and chosen == sorted(chosen)
    assert sum(not flags[i] for i in chosen) == 5
    assert select_examples(flags, 10, seed=1) == chosen
    assert len(select_examples([True] * 3, 10, seed=0)) == 3
    few_right = [False] * 8 + [True]  # too few correct rows: incorrect ones fill the rest
    assert sum(not few_right[i] for i in select_examples(few_right, 4, seed=0)) == 3
    assert select_examples([], 10, seed=0) == []


def test_empty_token_rewards_says_so(tmp_path: Path) -> None:
    run = make_run(tmp_path, rows=[])
    out = tmp_path / "out"
    result = build_report(**report_args(run, out))
    assert result["n_labelled"] == 0 and result["examples"] == []
    assert "No labelled samples" in (out / "report.html").read_text()
    assert "No labelled samples" in (out / "summary.md").read_text()


@pytest.mark.parametrize("rel", ["grm/quality.json", "eval/rlmec/test/metrics.json", "train_logs/rl.jsonl",
                                 "label/token_rewards.parquet", "label/metrics.json", "samples/sft/teacher.parquet",
                                 "grm/data_stats.json"])
def test_missing_input_names_the_file(run: Path, tmp_path: Path, rel: str) -> None:
    args = report_args(run, tmp_path / "out")
    (run / rel).unlink()
    with pytest.raises(DataError, match=re.escape(str(run / rel))):
        build_report(**args)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_empty_or_malformed_inputs_name_the_file(run: Path, tmp_path: Path) -> None:
    args = report_args(run, tmp_path / "out")
    (run / "train_logs" / "grm.jsonl").write_text("")
    with pytest.raises(DataError, match=r"grm\.jsonl: empty training log"):
        build_report(**args)
    make_run(tmp_path)
    write_json(run / "eval" / "sft" / "test" / "metrics.json", {"accuracy": 0.4})
    with pytest.raises(DataError, match=r"sft/test/metrics\.json: evaluation metrics lack"):
        build_report(**args)
    make_run(tmp_path)
    (run / "grm" / "quality.json").write_text("")
    with pytest.raises(DataError, match=r"quality\.json"):
        build_report(**args)
    rows = token_reward_rows()
    rows[3]["rewards"] = rows[3]["rewards"] + [0.1]
    make_run(tmp_path, rows=rows)
    with pytest.raises(DataError, match=r"token_rewards\.parquet: row 3 \(p3#1\): tokens \(1\) and rewards \(2\)"):
        build_report(**args)
    assert not (tmp_path / "out").exists()


def _comparison(path: Path) -> Path:
    method = {"seeds": [0, 1], "lr": 2e-3, "test_mean": 0.7, "test_std": 0.01, "test_mean_var": 1e-4,
              "validation_mean": 0.69, "wall_seconds_mean": 120.0, "tokens_mean": 1000.0,
              "wrong_steps_per_solution": 0.4}
    summary = {"methods": {"sft": {**method, "lr": None, "test_mean": 0.38, "wrong_steps_per_solution": 1.0},
                           "rlmec": method, "dpo": {**method, "lr": 1e-4, "test_mean": 0.45}},
               "rlmec_vs": {"sft": {"difference": 0.32, "se": 0.02, "rlmec_better_beyond_noise": True,
                                    "rlmec_worse_beyond_noise": False},
                            "dpo": {"difference": 0.25, "se": 0.02, "rlmec_better_beyond_noise": True,
                                    "rlmec_worse_beyond_noise": False}},
               "rlmec_beats_every_instance_level_method": True, "train_settings": {"epochs": 2},
               "attribution": [{"question": "the RL term on top of the imitation term", "a": "rlmec",
                                "b": "rlmec_imitation_only", "difference": 0.013, "se": 0.017,
                                "a_better_beyond_noise": False, "a_worse_beyond_noise": False}],
               "sweep": {"seed": 0, "split": "validation",
                         "methods": {"dpo": {"validation": {"0.0001": 0.44, "0.002": 0.02}, "best_lr": 1e-4,
                                             "in_use": 1e-4, "in_use_is_best": True, "policies": {}}}}}
    write_json(path, summary)
    return path


def test_comparison_is_the_main_table_when_given(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    png = tmp_path / "chart.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    build_report(**report_args(run, out, comparison=_comparison(tmp_path / "table.json"), comparison_chart=png))
    page = html.unescape((out / "report.html").read_text())
    md = (out / "summary.md").read_text()
    assert page.index('id="methods-compared"') < page.index('id="accuracy"')
    for text in (page, md):
        assert "45.0 +- 1.0" in text and "+25.0 +- 3.9 (beyond noise)" in text
        assert "RLMEC beats every instance-level method here (dpo) beyond noise: yes." in text
        assert "Learning rates chosen on the validation split" in text
    assert "<li>the RL term on top of the imitation term (<code>rlmec</code> - <code>rlmec_imitation_only</code>): " \
           "+1.3 +- 3.3 pp, within noise</li>" in page
    assert "- the RL term on top of the imitation term (`rlmec` - `rlmec_imitation_only`): +1.3 +- 3.3 pp" in md
    assert "| dpo | 2 | 0.0001 | 45.0 +- 1.0 |" in md and "![test accuracy per method](../chart.png)" in md
    # without the comparison the report has no such section; a malformed table names the file
    build_report(**report_args(run, tmp_path / "plain"))
    assert "methods-compared" not in (tmp_path / "plain" / "report.html").read_text()
    write_json(tmp_path / "bad.json", {"rows": []})
    with pytest.raises(DataError, match=r"bad\.json"):
        build_report(**report_args(run, tmp_path / "bad", comparison=tmp_path / "bad.json"))
    assert not (tmp_path / "bad").exists()


def test_eval_paths_by_policy() -> None:
    paths = ["results/x/eval/sft/test/metrics.json", "results/x/eval/rlmec/test/metrics.json"]
    assert eval_paths_by_policy(paths) == {"sft": {"test": paths[0]}, "rlmec": {"test": paths[1]}}
    with pytest.raises(ValueError, match="metrics.json"):
        eval_paths_by_policy(["results/x/sft/test.json"])


def test_cli_report(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert cli_main(["report", "--run-dir", str(run), "--out", str(out), "--examples", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (out / "report.html").read_text().count('class="example"') == 2
    assert (out / "report_figures" / "rl.png").is_file()
    assert cli_main(["report", "--run-dir", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_health_panel_comes_first_with_every_check_and_the_update_check(run: Path, tmp_path: Path) -> None:
    from rlmec_core.report import build_report

    build_report(**report_args(run, tmp_path / "out"), rl_lr=5e-6)
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.index('id="health"') < page.index('id="accuracy"')  # the first screen says whether to trust it
    panel = page[page.index('id="health"'):page.index("</div>", page.index('id="health"'))]
    assert "grm_rewrite_correct" in panel and "label_wrong_reward_mass" in panel and "update_vs_start" in panel
    assert "fine &lt;ok&gt;." in panel  # escaped
    assert 'class="health-amber"' in panel and "Warnings (amber)" in panel
    md = (tmp_path / "out" / "summary.md").read_text()
    assert md.index("## Health") < md.index("## Accuracy") and "🟠 amber" in md and "🟢 green" in md


def test_health_panel_turns_amber_when_the_update_loses_accuracy_beyond_noise(run: Path, tmp_path: Path) -> None:
    from rlmec_core.report import build_report

    write_json(run / "eval" / "rlmec" / "validation" / "metrics.json",
               {"accuracy": 0.31, "ci_low": 0.27, "ci_high": 0.35, "correct": 155, "total": 500, "backend": "hf",
                "confidence": 0.95})
    write_json(run / "eval" / "sft" / "validation" / "metrics.json",
               {"accuracy": 0.719, "ci_low": 0.68, "ci_high": 0.76, "correct": 360, "total": 500, "backend": "hf",
                "confidence": 0.95})
    (run / "checks" / "preflight.json").unlink()  # a run without the file: the panel says so
    build_report(**report_args(run, tmp_path / "out", check_missing=False), rl_lr=2e-3)
    page = (tmp_path / "out" / "report.html").read_text()
    panel = page[page.index('id="health"'):page.index("</div>", page.index('id="health"'))]
    assert 'class="health-amber"' in panel and "the learning rate 0.002 over 50 optimizer steps" in panel
    assert "No pre-flight checks file" in panel


def test_health_panel_is_red_when_a_lowered_threshold_let_a_bad_grm_through(run: Path, tmp_path: Path) -> None:
    import json as _json

    from rlmec_core.preflight import run_preflight
    from rlmec_core.report import build_report

    write_json(run / "grm" / "bad_quality.json", {"validation_wrong": 96, "rewrite_answer_correct": 0.0,
                                                  "error_step_accuracy": 0.19})
    write_json(run / "label" / "bad_metrics.json", {"labelled": 636, "labelled_wrong": 9, "reward_mass_correct": 300.0,
                                                    "reward_mass_wrong": 0.4})
    run_preflight(run / "label" / "bad_metrics.json", run / "checks" / "preflight.json",
                  grm_quality_path=run / "grm" / "bad_quality.json",
                  grm_cfg={"min_rewrite_correct": 0, "min_error_step_accuracy": 0},
                  label_cfg={"min_wrong_samples": 0, "min_wrong_reward_share": 0.01})
    assert all(not c["blocking"] for c in _json.loads((run / "checks" / "preflight.json").read_text())["checks"])
    build_report(**report_args(run, tmp_path / "out"), rl_lr=2e-3)
    page = (tmp_path / "out" / "report.html").read_text()
    panel = page[page.index('id="health"'):page.index("</div>", page.index('id="health"'))]
    assert "A stopping check is red" in panel and panel.count('class="health-red"') == 3
    assert "grm.min_rewrite_correct was lowered to 0, so the run went on" in panel
