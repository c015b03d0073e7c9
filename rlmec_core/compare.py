"""The comparison table of methods (issue 7): accuracy mean +- std over seeds, cost, and wrong steps.

Inputs are explicit paths (Snakemake declares them): for every (method, seed) run its evaluation
metrics per split, its greedy test predictions, and (for trained methods) its model card. Outputs: a
Markdown table, the same numbers as JSON, and a bar chart of test accuracy with error bars.

"Beyond noise": RLMEC's mean test accuracy exceeds another method's by more than 1.96 standard errors
of the difference, where each mean's variance is the seed variance / n plus the test set's binomial
variance p(1 - p) / N / n (so one seed still carries the sampling noise of a finite test set).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlmec_core.io import atomic_path, read_parquet, write_json_atomic, write_text_atomic
from rlmec_core.schemas import SAMPLES

INSTANCE_LEVEL = ("rft", "instance_rl", "instance_rl_no_imitation", "dpo", "grpo")
# Pairs that isolate one part of RLMEC: (question, method a, method b); the table reports a - b. Each pair
# differs in exactly one thing (rlmec_core/methods.py): instance_rl keeps the imitation term.
ATTRIBUTION = (
    ("RLMEC against more SFT on the same problems' gold solutions", "rlmec", "sft_gold"),
    ("token-level rewards instead of one reward per sample (both with the imitation term)", "rlmec", "instance_rl"),
    ("token-level rewards instead of one reward per sample (both without the imitation term)",
     "rlmec_no_imitation", "instance_rl_no_imitation"),
    ("the RL term on top of the imitation term", "rlmec", "rlmec_imitation_only"),
    ("the imitation term on top of the RL term", "rlmec", "rlmec_no_imitation"),
    ("the GRM's labels instead of the teacher's", "rlmec", "rlmec_teacher_rewrites"),
)


def _read_json(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: missing (did the method's evaluation run?)")
    return json.loads(p.read_text())


def mean_wrong_steps(predictions_path: str | Path, questions: Mapping[str, str]) -> float | None:
    """Mean number of locally wrong steps per greedy test solution, by the demo oracle
    (``rlmec_core.teacher.oracle.wrong_steps``); None when the questions are not demo-task questions."""
    from rlmec_core.teacher.oracle import wrong_steps

    rows = read_parquet(predictions_path, SAMPLES).select(["problem_id", "completion"]).to_pylist()
    counts = []
    for r in rows:
        try:
            counts.append(wrong_steps(questions[r["problem_id"]],
                                      [ln.strip() for ln in r["completion"].splitlines() if ln.strip()]))
        except (KeyError, ValueError):
            return None  # another task, or predictions of another split
    return float(np.mean(counts)) if counts else None


def kind_accuracy(predictions_path: str | Path, kinds: Mapping[str, str]) -> dict[str, float]:
    """Greedy accuracy per kind of problem (``kinds``: problem id -> kind, e.g. the demo's main and hard
    problems), from a run's test predictions; problems without a kind are left out."""
    rows = read_parquet(predictions_path, SAMPLES).select(["problem_id", "correct"]).to_pylist()
    by: dict[str, list[bool]] = {}
    for r in rows:
        if r["problem_id"] in kinds:
            by.setdefault(kinds[r["problem_id"]], []).append(bool(r["correct"]))
    return {kind: sum(v) / len(v) for kind, v in sorted(by.items())}


def demo_kinds(test_problems: str | Path, synth: Mapping[str, Any]) -> dict[str, str]:
    """``{problem id: "main" | "hard"}`` of a demo test split with a hard tier (config ``task.synth.hard``):
    "main" when the problem is within the main spec; empty when there is no hard tier."""
    from rlmec_core.stages.data import arith_spec, load_problems
    from rlmec_core.tasks.arith import within_spec

    if not synth.get("hard"):
        return {}
    spec = arith_spec(synth)
    return {p.id: "main" if within_spec(p.question, spec) else "hard" for p in load_problems(test_problems)}


def _stats(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def build_sweep(runs: Sequence[Mapping[str, Any]], *, in_use: Mapping[str, float], seed: int, out_md: str | Path,
                out_json: str | Path) -> dict[str, Any]:
    """The learning-rate sweep table: validation accuracy of every (method, lr) run of one seed.

    ``runs``: dicts with ``method``, ``lr``, ``policy`` and ``metrics`` (its *validation* metrics.json; the
    test split is never read here); ``in_use``: the lr each method is compared with (``compare.lr``).
    For each method the best lr is the one with the highest validation accuracy (ties: the smaller lr);
    ``in_use_is_best`` says whether the comparison uses it.
    """
    methods: dict[str, dict[str, Any]] = {}
    for run in runs:
        metrics = _read_json(run["metrics"])
        split = metrics.get("split") or (Path(metrics["data"]).stem if metrics.get("data") else "validation")
        if split != "validation":
            raise ValueError(f"{run['metrics']}: sweep metrics must be of the validation split, got {split!r}")
        entry = methods.setdefault(run["method"], {"validation": {}, "policies": {}})
        entry["validation"][float(run["lr"])] = float(metrics["accuracy"])
        entry["policies"][float(run["lr"])] = run["policy"]
    for name, entry in methods.items():
        best = max(sorted(entry["validation"]), key=lambda lr: entry["validation"][lr])
        used = in_use.get(name)
        entry.update(best_lr=best, in_use=used, in_use_is_best=used is not None and math.isclose(used, best))
    summary = {"seed": seed, "split": "validation",
               "methods": {m: {**e, "validation": {f"{lr:g}": a for lr, a in e["validation"].items()},
                               "policies": {f"{lr:g}": p for lr, p in e["policies"].items()}}
                           for m, e in methods.items()}}
    write_json_atomic(out_json, summary)
    write_text_atomic(out_md, _sweep_markdown(summary))
    return summary


def sweep_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]], str]:
    """The sweep table: head, rows (the best validation accuracy of a method marked ``**``) and its intro."""
    lrs = sorted({float(lr) for m in summary["methods"].values() for lr in m["validation"]})
    head = ["method", *[f"lr {lr:g}" for lr in lrs], "best", "compared at"]
    rows = []
    for name, m in summary["methods"].items():
        cells = []
        for lr in lrs:
            acc = m["validation"].get(f"{lr:g}")
            text = "" if acc is None else f"{100 * acc:.1f}"
            cells.append(f"**{text}**" if acc is not None and math.isclose(lr, m["best_lr"]) else text)
        used = m["in_use"]
        used_text = "n/a" if used is None else f"{used:g}" + ("" if m["in_use_is_best"] else " (**not the best**)")
        rows.append([name, *cells, f"{m['best_lr']:g}", used_text])
    intro = (f"Validation accuracy % of each method trained at each peak learning rate (seed {summary['seed']}; "
             "the test split is not read). **Bold**: the best; the comparison uses the lr of `compare.lr` "
             "(else `rl.train.lr`, `compare.grpo.lr` for grpo).")
    return head, rows, intro


def _sweep_markdown(summary: Mapping[str, Any]) -> str:
    head, rows, intro = sweep_table(summary)
    lines = ["## Learning rates chosen on the validation split", "", intro, "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join([f"`{r[0]}`", *r[1:]]) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def build_comparison(runs: Sequence[Mapping[str, Any]], *, test_problems: str | Path, out_md: str | Path,
                     out_json: str | Path, out_png: str | Path,
                     rl_cfg: Mapping[str, Any] | None = None, sweep_json: str | Path | None = None,
                     synth: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``runs``: dicts with ``method``, ``seed``, ``policy`` (its name), ``model`` (its directory, with
    ``rlmec_model.json`` for trained methods), ``metrics`` ({split: metrics.json}, ``test`` included),
    ``predictions`` (its greedy test predictions) and optionally ``lr`` (its peak learning rate);
    ``test_problems``: the test split's problems; ``sweep_json``: the output of :func:`build_sweep`, whose
    table is appended to the Markdown; ``synth``: the demo's ``task.synth``, for test accuracy per kind of
    problem when it has a hard tier (:func:`demo_kinds`)."""
    from rlmec_core.stages.data import load_problems

    questions = {p.id: p.question for p in load_problems(test_problems)}
    kinds = demo_kinds(test_problems, synth) if synth else {}
    per_run = []
    wrong_cache: dict[str, float | None] = {}
    for run in runs:
        policy = run["policy"]
        acc = {split: _read_json(path) for split, path in run["metrics"].items()}
        if "test" not in acc:
            raise ValueError(f"run {policy!r} has no test metrics")
        card_path = Path(run["model"]) / "rlmec_model.json"
        card = json.loads(card_path.read_text()) if policy != "sft" and card_path.exists() else {}
        if policy not in wrong_cache:
            wrong_cache[policy] = mean_wrong_steps(run["predictions"], questions)
        per_run.append({
            "method": run["method"], "seed": run["seed"], "policy": policy,
            "accuracy": {s: acc[s]["accuracy"] for s in acc}, "test_total": acc["test"]["total"],
            "wall_seconds": card.get("wall_seconds") or 0.0, "tokens": card.get("tokens_seen") or 0,
            "wrong_steps_per_solution": wrong_cache[policy], "lr": run.get("lr"),
            "test_by_kind": kind_accuracy(run["predictions"], kinds) if kinds else {},
        })
    methods: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["method"] for r in per_run):
        rs = [r for r in per_run if r["method"] == name]
        test_mean, test_std = _stats([r["accuracy"]["test"] for r in rs])
        n_test = rs[0]["test_total"]
        binom = test_mean * (1 - test_mean) / max(n_test, 1)
        ws = [r["wrong_steps_per_solution"] for r in rs if r["wrong_steps_per_solution"] is not None]
        methods[name] = {
            "seeds": [r["seed"] for r in rs], "lr": rs[0]["lr"],
            "test_mean": test_mean, "test_std": test_std,
            "test_mean_var": (test_std ** 2 + binom) / len(rs),
            "validation_mean": _stats([r["accuracy"]["validation"] for r in rs])[0]
            if all("validation" in r["accuracy"] for r in rs) else None,
            "wall_seconds_mean": _stats([r["wall_seconds"] for r in rs])[0],
            "tokens_mean": _stats([r["tokens"] for r in rs])[0],
            "wrong_steps_per_solution": float(np.mean(ws)) if ws else None,
            "test_by_kind": {k: _stats([r["test_by_kind"][k] for r in rs])[0] for k in rs[0]["test_by_kind"]},
        }
    attribution = []
    for question, a, b in ATTRIBUTION:
        if a in methods and b in methods:
            attribution.append({"question": question, "a": a, "b": b,
                                **_difference(methods[a], methods[b])})
    verdict = {}
    if "rlmec" in methods:
        r = methods["rlmec"]
        for name, m in methods.items():
            if name == "rlmec":
                continue
            d = _difference(r, m)
            verdict[name] = {"difference": d["difference"], "se": d["se"],
                             "rlmec_better_beyond_noise": d["a_better_beyond_noise"],
                             "rlmec_worse_beyond_noise": d["a_worse_beyond_noise"]}
    beats_instance = [v["rlmec_better_beyond_noise"] for k, v in verdict.items() if k in INSTANCE_LEVEL]
    summary = {"runs": per_run, "methods": methods, "rlmec_vs": verdict, "attribution": attribution,
               "rlmec_beats_every_instance_level_method": bool(beats_instance) and all(beats_instance),
               "train_settings": dict((rl_cfg or {}).get("train", {})),
               "sweep": json.loads(Path(sweep_json).read_text()) if sweep_json else None}
    write_json_atomic(out_json, summary)
    write_text_atomic(out_md, _markdown(summary))
    _chart(methods, out_png)
    return summary


def _difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Test-accuracy difference a - b of two methods, its standard error (seed variance and the binomial
    variance of the test set, per mean) and whether it is beyond noise (|difference| > 1.96 standard errors)."""
    diff = a["test_mean"] - b["test_mean"]
    se = math.sqrt(a["test_mean_var"] + b["test_mean_var"])
    return {"difference": diff, "se": se, "a_better_beyond_noise": diff > 1.96 * se,
            "a_worse_beyond_noise": diff < -1.96 * se}


def attribution_lines(summary: Mapping[str, Any]) -> list[str]:
    """One sentence per :data:`ATTRIBUTION` pair that was run: what it isolates, a - b in points with its
    95% half-width, and whether it is beyond noise."""
    lines = []
    for p in summary.get("attribution") or []:
        mark = "beyond noise" if p["a_better_beyond_noise"] or p["a_worse_beyond_noise"] else "within noise"
        lines.append(f"{p['question']} (`{p['a']}` - `{p['b']}`): {100 * p['difference']:+.1f} +- "
                     f"{196 * p['se']:.1f} pp, {mark}")
    return lines


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


COMPARISON_HEAD = ("method", "seeds", "lr", "test accuracy % (mean +- std)", "validation %", "train wall s",
                   "tokens processed", "wrong steps / solution", "RLMEC - method (pp)")
KIND_HEAD = "test % by kind of problem"


def comparison_intro(summary: Mapping[str, Any]) -> str:
    return ("Test accuracy is the mean +- std over seeds of greedy accuracy on the test split; every method trains "
            "the same starting policy on the same labelled samples with the same loss machinery and the same "
            f"`rl.train` settings ({json.dumps(summary['train_settings'])}) except the peak learning rate (column "
            "`lr`), which is chosen per method on the validation split only (sweep table below, when run); grpo "
            "samples on-line from the same problems with the same number of solutions per problem. Wrong steps: "
            "mean locally wrong steps per greedy test solution (oracle).")


def comparison_rows(summary: Mapping[str, Any]) -> tuple[list[list[str]], str]:
    """The comparison table's rows (cells as text, in :data:`COMPARISON_HEAD` order) and its verdict sentence."""
    methods, verdict = summary["methods"], summary["rlmec_vs"]
    sft_ws = methods.get("sft", {}).get("wrong_steps_per_solution")
    rows = []
    for name, m in methods.items():
        v = verdict.get(name)
        if v is None:
            vs = "" if name == "rlmec" else "n/a"
        else:
            mark = " (beyond noise)" if v["rlmec_better_beyond_noise"] else (
                " (RLMEC worse, beyond noise)" if v["rlmec_worse_beyond_noise"] else " (within noise)")
            vs = f"{100 * v['difference']:+.1f} +- {196 * v['se']:.1f}{mark}"
        ws = m["wrong_steps_per_solution"]
        ws_text = "n/a" if ws is None else f"{ws:.2f}" + (
            f" ({ws - sft_ws:+.2f} vs sft)" if sft_ws is not None and name != "sft" else "")
        lr = "" if m.get("lr") is None else f"{m['lr']:g}"
        rows.append([name, str(len(m["seeds"])), lr, f"{_pct(m['test_mean'])} +- {100 * m['test_std']:.1f}",
                     _pct(m["validation_mean"]), f"{m['wall_seconds_mean']:.0f}", f"{m['tokens_mean']:,.0f}",
                     ws_text, vs])
        if m.get("test_by_kind"):
            rows[-1].append(", ".join(f"{k} {_pct(v)}" for k, v in m["test_by_kind"].items()))
    present = [k for k in verdict if k in INSTANCE_LEVEL]
    beats = summary["rlmec_beats_every_instance_level_method"]
    sentence = (f"RLMEC beats every instance-level method here ({', '.join(present) or 'none run'}) beyond noise: "
                f"{'yes' if beats else 'no'}.")
    return rows, sentence


def comparison_head(summary: Mapping[str, Any]) -> list[str]:
    """The comparison table's head (with the per-kind column when the runs have kinds of problem)."""
    by_kind = any(m.get("test_by_kind") for m in summary["methods"].values())
    return [*COMPARISON_HEAD, *([KIND_HEAD] if by_kind else [])]


def _markdown(summary: Mapping[str, Any]) -> str:
    rows, sentence = comparison_rows(summary)
    head = comparison_head(summary)
    lines = ["# Methods compared on the same samples", "", comparison_intro(summary), "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join([f"`{r[0]}`", *r[1:]]) + " |" for r in rows]
    lines += ["", f"**{sentence}** (Difference > 1.96 standard errors; see rlmec_core/compare.py.)", ""]
    attribution = attribution_lines(summary)
    if attribution:
        lines += ["## Where the difference comes from", "", *[f"- {line}" for line in attribution], ""]
    if summary.get("sweep"):
        lines += [_sweep_markdown(summary["sweep"])]
    return "\n".join(lines)


def _chart(methods: Mapping[str, Mapping[str, Any]], out_png: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(methods)
    means = [100 * methods[n]["test_mean"] for n in names]
    stds = [100 * methods[n]["test_std"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
    colors = ["#2b7bba" if n.startswith("rlmec") else "#999999" for n in names]
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Greedy test accuracy, mean +- std over seeds")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
