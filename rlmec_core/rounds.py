"""Accuracy by round of iterative RLMEC (``rounds: N``): does another round still pay?

Round 0 is the starting policy ``sft``; round r trains each (method, seed) chain from its round r-1 policy.
:func:`build_rounds` reads every chain's evaluation metrics of every round and split (explicit paths, which
Snakemake declares) and writes a Markdown table, the same numbers as JSON, and a chart of accuracy by round.

"Pays" (:func:`round_gain`): the mean over seeds of the per-seed validation gain of round r over round r-1
exceeds 1.96 standard errors, where the standard error carries the seed variance of the gains and the
binomial noise of a finite validation set (two evaluations per seed, of n_val problems each). A method's
rounds "stop paying" at the first round r >= 1 whose gain does not pay.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlmec_core.io import PathLike, atomic_path, write_text_atomic

__all__ = ["build_rounds", "round_gain", "rounds_table", "stop_lines", "grm_table", "rounds_intro",
           "Z", "GRM_KEYS"]

Z = 1.96  # a gain pays when its mean exceeds Z standard errors
GRM_KEYS: dict[str, str] = {
    "rewrite_answer_correct": "rewrite answer-correct %",
    "error_step_accuracy": "first-error-step accuracy %",
    "token_flag_f1": "token-flag F1",
}


def round_gain(prev: Sequence[float], cur: Sequence[float], n_val: int) -> dict[str, Any]:
    """The gain of one round over the previous one, and whether it is beyond noise.

    ``prev``, ``cur``: the accuracy (fraction) of each seed before and after the round, in the same seed
    order; ``n_val``: the number of problems each accuracy is measured on. With k seeds and the per-seed
    gains g_i = cur_i - prev_i: ``mean`` = mean(g); ``se`` = sqrt(var(g, ddof=1) / k + 2 p (1 - p) /
    (n_val k)), the seed term 0 when k = 1 and p the mean of all prev and cur values; ``pays`` = mean >
    1.96 se.

    Raises:
        ValueError: ``prev`` and ``cur`` differ in length or are empty, or ``n_val`` < 1.
    """
    if len(prev) != len(cur) or not prev:
        raise ValueError(f"round_gain: prev ({len(prev)}) and cur ({len(cur)}) need the same, non-zero length")
    if n_val < 1:
        raise ValueError(f"round_gain: n_val must be >= 1, got {n_val}")
    a, b = np.asarray(prev, dtype=float), np.asarray(cur, dtype=float)
    g = b - a
    k = len(g)
    p = float(np.concatenate([a, b]).mean())
    seed_var = float(g.var(ddof=1)) / k if k > 1 else 0.0
    se = math.sqrt(seed_var + 2 * p * (1 - p) / (n_val * k))
    mean = float(g.mean())
    return {"mean": mean, "se": se, "pays": bool(mean > Z * se)}


def _noise_rule(gain_split: str, fallback: bool) -> str:
    rule = (f"A round pays when the mean over seeds of its per-seed {gain_split} accuracy gain over the previous "
            f"round exceeds {Z} standard errors, the standard error combining the seed variance of the gains and "
            f"the binomial variance 2p(1-p)/n of two evaluations on n {gain_split} problems")
    if fallback:
        rule += f" ({gain_split} is used because the validation split is not among the splits)"
    return rule + "."


def _json(path: Path, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} {where}: not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path} {where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _read_metrics(path: PathLike, where: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: missing metrics of {where} (did its evaluation run?)")
    obj = _json(p, where)
    acc, total = obj.get("accuracy"), obj.get("total")
    if not isinstance(acc, (int, float)) or isinstance(acc, bool) or not 0 <= acc <= 1:
        raise ValueError(f"{p} {where}: accuracy must be a number in [0, 1], got {acc!r}")
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        raise ValueError(f"{p} {where}: total must be a positive integer, got {total!r}")
    return obj


def _stats(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "values": [float(v) for v in arr]}


def _read_quality(path: PathLike | None, where: str) -> dict[str, Any] | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: missing GRM quality of {where}")
    obj = _json(p, where)
    return {k: obj.get(k) for k in GRM_KEYS}


def build_rounds(chains: Sequence[Mapping[str, Any]], *, out_md: PathLike, out_json: PathLike, out_png: PathLike,
                 grm_quality: Sequence[Mapping[str, Any]] | None = (),
                 splits: Sequence[str] = ("validation", "test")) -> dict[str, Any]:
    """Accuracy by round of every method, whether each round paid, and the GRM's quality per round.

    Args:
        chains: one mapping per (method, seed) chain: ``method``, ``seed``, ``lr`` (or None), optionally
            ``policies`` (the policy name of each round) and ``metrics``: one ``{split: metrics.json}`` per
            round 0..N (every split of ``splits``). Every chain has the same number of rounds.
        out_md, out_json, out_png: the table, its numbers, the chart (each written atomically).
        grm_quality: ``{"round", "method", "seed", "refreshed": quality.json, "stale": quality.json | None}``
            per round: the GRM refreshed on round r's teacher rewrites and the round-1 GRM, both scored on
            the held-out part of round r's teacher data.
        splits: the splits reported; the gain is measured on ``validation`` (else on the first split).

    Returns:
        The summary written to ``out_json``: ``{"rounds", "splits", "gain_split", "noise_rule", "methods":
        {method: {"lr", "seeds", "policies", "rounds": [{"round", <split>: {"mean", "std", "values"},
        "val_gain": None | {"mean", "se", "pays"}}], "stops_paying_at"}}, "grm": [...]}`` (fractions).

    Raises:
        ValueError: no chains or splits, unequal round counts, a repeated (method, seed), a round without a
            split, or malformed metrics (each naming the chain or file).
        FileNotFoundError: a metrics or quality file is missing (naming it and its (method, seed, round)).
    """
    splits = list(splits)
    if not chains:
        raise ValueError("build_rounds: no chains given")
    if not splits:
        raise ValueError("build_rounds: no splits given")
    gain_split = "validation" if "validation" in splits else splits[0]
    n_rounds = len(chains[0]["metrics"])
    seen: set[tuple[str, int]] = set()
    for chain in chains:
        name = f"chain ({chain['method']!r}, seed {chain['seed']})"
        if len(chain["metrics"]) != n_rounds:
            first = f"({chains[0]['method']!r}, seed {chains[0]['seed']})"
            raise ValueError(f"{name} has {len(chain['metrics'])} rounds of metrics, the first chain {first} "
                             f"{n_rounds}: every chain needs the same")
        if n_rounds < 1:
            raise ValueError(f"{name}: no rounds of metrics (round 0 at least)")
        if (chain["method"], chain["seed"]) in seen:
            raise ValueError(f"{name} is given twice")
        seen.add((chain["method"], chain["seed"]))
        policies = chain.get("policies")
        if policies is not None and len(policies) != n_rounds:
            raise ValueError(f"{name}: {len(policies)} policy names for {n_rounds} rounds")

    # read everything first: nothing is written when an input is bad
    acc: dict[tuple[str, int], list[dict[str, dict[str, Any]]]] = {}
    for chain in chains:
        per_round = []
        for r, by_split in enumerate(chain["metrics"]):
            where = f"({chain['method']}, seed {chain['seed']}, round {r})"
            absent = [s for s in splits if s not in by_split]
            if absent:
                raise ValueError(f"{where}: no metrics for split(s) {absent}")
            per_round.append({s: _read_metrics(by_split[s], where) for s in splits})
        acc[(chain["method"], chain["seed"])] = per_round
    grm = []
    for q in sorted(grm_quality or (), key=lambda q: int(q["round"])):
        where = f"({q['method']}, seed {q['seed']}, round {q['round']})"
        grm.append({"round": int(q["round"]), "method": q["method"], "seed": q["seed"],
                    "refreshed": _read_quality(q["refreshed"], where),
                    "stale": _read_quality(q.get("stale"), where)})

    methods: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(c["method"] for c in chains):
        cs = [c for c in chains if c["method"] == name]
        runs = [acc[(c["method"], c["seed"])] for c in cs]
        rounds = []
        for r in range(n_rounds):
            entry: dict[str, Any] = {"round": r}
            for s in splits:
                entry[s] = _stats([run[r][s]["accuracy"] for run in runs])
            if r == 0:
                entry["val_gain"] = None
            else:
                n_val = min(int(run[q][gain_split]["total"]) for run in runs for q in (r - 1, r))
                entry["val_gain"] = round_gain([run[r - 1][gain_split]["accuracy"] for run in runs],
                                               [run[r][gain_split]["accuracy"] for run in runs], n_val)
            rounds.append(entry)
        stops = next((e["round"] for e in rounds[1:] if not e["val_gain"]["pays"]), None)
        methods[name] = {"lr": cs[0].get("lr"), "seeds": [c["seed"] for c in cs],
                         "policies": [list(c["policies"]) if c.get("policies") is not None else None for c in cs],
                         "rounds": rounds, "stops_paying_at": stops}
    summary = {"rounds": n_rounds - 1, "splits": splits, "gain_split": gain_split,
               "noise_rule": _noise_rule(gain_split, gain_split != "validation"), "methods": methods, "grm": grm}
    # not write_json_atomic: its sorted keys would lose the methods' first-seen order
    write_text_atomic(out_json, json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out_md, _markdown(summary))
    _chart(summary, out_png)
    return summary


# --------------------------------------------------------------------------------------------------
# tables (shared with rlmec_core.report)


def _pm(stats: Mapping[str, Any]) -> str:
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def rounds_intro(summary: Mapping[str, Any]) -> str:
    """The sentence above the table: what a row holds and the noise rule."""
    return (f"Accuracy % (mean ± std over seeds) of each method after each of {summary['rounds']} round(s); round 0 "
            f"is the starting policy and round r trains from round r-1's policy. Gain: the mean "
            f"{summary['gain_split']} gain over the previous round in points ± 1.96 standard errors. "
            f"{summary['noise_rule']}")


def rounds_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Head and rows (text) of the per-round table: one row per (method, round)."""
    splits = summary["splits"]
    head = ["method", "round", *[f"{s} % (mean ± std)" for s in splits],
            f"{summary['gain_split']} gain (pp ± 1.96 se)", "verdict"]
    rows = []
    for name, m in summary["methods"].items():
        for e in m["rounds"]:
            g = e["val_gain"]
            gain = "" if g is None else f"{100 * g['mean']:+.1f} ± {100 * Z * g['se']:.1f}"
            verdict = "" if g is None else ("pays" if g["pays"] else "within noise")
            rows.append([name, str(e["round"]), *[_pm(e[s]) for s in splits], gain, verdict])
    return head, rows


def stop_lines(summary: Mapping[str, Any]) -> list[str]:
    """One sentence per method: the round where its rounds stop paying, or that every round paid."""
    lines = []
    for name, m in summary["methods"].items():
        r = m["stops_paying_at"]
        if r is None:
            lines.append(f"{name}: every round paid" if summary["rounds"] else f"{name}: no round after round 0")
        else:
            g = m["rounds"][r]["val_gain"]
            gain = f"{summary['gain_split']} gain {100 * g['mean']:+.1f} ± {100 * Z * g['se']:.1f} pp, within noise"
            if r == 1:  # not even the first round is above the starting policy
                lines.append(f"{name}: rounds stop paying at round 1: no round pays ({gain})")
            else:
                lines.append(f"{name}: rounds stop paying at round {r} ({gain})")
    return lines


def grm_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Head and rows of the GRM-quality table: per round, the refreshed GRM and the round-1 (stale) one."""
    head = ["round", "method", "seed", "GRM", *GRM_KEYS.values()]

    def cells(q: Mapping[str, Any]) -> list[str]:
        out = []
        for k in GRM_KEYS:
            v = q.get(k)
            out.append("n/a" if v is None else (f"{v:.3f}" if k == "token_flag_f1" else f"{100 * v:.1f}"))
        return out

    rows = []
    for g in summary.get("grm") or []:
        base = [str(g["round"]), str(g["method"]), str(g["seed"])]
        rows.append([*base, "refreshed", *cells(g["refreshed"])])
        if g.get("stale") is not None:
            rows.append([*base, "round-1 (stale)", *cells(g["stale"])])
    return head, rows


def _md_rows(head: Sequence[str], rows: Sequence[Sequence[str]], code_first: bool = False) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join([f"`{r[0]}`" if code_first else r[0], *r[1:]]) + " |" for r in rows]
    return lines


def _markdown(summary: Mapping[str, Any]) -> str:
    head, rows = rounds_table(summary)
    lines = ["# Accuracy by round", "", rounds_intro(summary), "", *_md_rows(head, rows, code_first=True), ""]
    lines += [f"- {line}" for line in stop_lines(summary)] + [""]
    if summary.get("grm"):
        g_head, g_rows = grm_table(summary)
        lines += ["## GRM quality by round", "",
                  "The GRM refreshed on each round's teacher rewrites against the round-1 GRM, both scored on the "
                  "held-out part of that round's teacher data.", "", *_md_rows(g_head, g_rows), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# chart


def _chart(summary: Mapping[str, Any], out_png: PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    splits = summary["splits"]
    methods = summary["methods"]
    n = summary["rounds"]
    fig = Figure(figsize=(max(10.0, 5.0 * len(splits)), 4.0))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, len(splits), i + 1) for i in range(len(splits))]
    colors = [f"C{i % 10}" for i in range(len(methods))]
    width = 0.04 * max(len(methods) - 1, 0)  # a small horizontal offset per method so error bars do not overlap
    any_stop = False
    for ax, split in zip(axes, splits):
        for i, (name, m) in enumerate(methods.items()):
            dx = (i / max(len(methods) - 1, 1) - 0.5) * width if len(methods) > 1 else 0.0
            xs = [e["round"] + dx for e in m["rounds"]]
            ys = [100 * e[split]["mean"] for e in m["rounds"]]
            err = [100 * e[split]["std"] for e in m["rounds"]]
            ax.errorbar(xs, ys, yerr=err, marker="o", markersize=4, capsize=3, color=colors[i], label=name)
            r = m["stops_paying_at"]
            if r is not None:
                any_stop = True
                ax.plot([xs[r]], [ys[r]], marker="o", markersize=13, markerfacecolor="none",
                        markeredgecolor=colors[i], markeredgewidth=1.8, linestyle="none")
        ax.set_xticks(range(n + 1))
        ax.set_xlim(-0.3, n + 0.3)
        ax.set_xlabel("round (0 = starting policy)")
        ax.set_ylabel(f"{split} accuracy (%)")
        ax.set_title(f"{split}, mean ± std over seeds")
        ax.grid(alpha=0.3)
    handles, labels = axes[-1].get_legend_handles_labels()
    if any_stop:
        handles.append(Line2D([], [], marker="o", markersize=11, markerfacecolor="none", markeredgecolor="#444444",
                              linestyle="none"))
        labels.append(f"stops paying ({summary['gain_split']} gain within noise)")
    axes[-1].legend(handles, labels, fontsize="small", loc="best")
    fig.suptitle("Accuracy by round")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
