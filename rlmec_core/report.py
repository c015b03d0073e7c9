"""The run report: ``report.html`` (self-contained), ``summary.md`` and PNG training curves.

:func:`build_report` reads explicitly named files (no globbing of a run directory, so that Snakemake
declares every input) and writes, each atomically:

- ``out_html``: one self-contained page (inline CSS, PNGs embedded as base64);
- ``out_md``: the same content in Markdown, images linked relative to the Markdown file;
- ``fig_dir``: one PNG of training curves per training log (``<name>.png``).

Sections: (a) greedy accuracy per policy and split with confidence intervals, RLMEC minus SFT, and a
plain sentence on whether RLMEC's accuracy lies above SFT's interval (with the methods table first and
the accuracy by round of iterative RLMEC after it, when given); (b) GRM quality; (c) stage metrics
(flattened JSON objects); (d) training curves; (e) example labelled solutions chosen with a seeded RNG
(a mix of correct and incorrect): the prediction with each token coloured by its reward (red =
penalised, green = rewarded, stronger colour = larger ``|r_t|`` relative to the label clip range; the
tooltip gives ``p_t`` and ``r_t``), its per-step reward sums, and the rewrite with edited tokens
highlighted.

Every input is read and checked before anything is written; a missing or malformed input raises
``DataError`` naming the file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rlmec_core.errors import DataError
from rlmec_core.inspect import (
    DEFAULT_NEG_CLIP,
    DEFAULT_POS_CLIP,
    edited_mask,
    infer_kept_weight,
    marked_prediction,
    marked_rewrite,
    reward_level,
    solution_steps,
)
from rlmec_core.io import PathLike, atomic_path, iter_jsonl, read_json, read_parquet, write_text_atomic
from rlmec_core.rewards import check_clip, step_reward_sums
from rlmec_core.schemas import TOKEN_REWARDS

__all__ = ["build_report", "find_run_inputs", "RunInputs", "eval_paths_by_policy", "select_examples"]

log = logging.getLogger("rlmec")

POLICY_LABELS = {"sft": "SFT", "sft_gold": "SFT-gold", "rlmec": "RLMEC"}
MAIN_POLICIES = ("sft", "sft_gold", "rlmec")  # the starting policy, more SFT on gold data, the method
CONVERGED_POINTS = 2.0  # sft_gold - sft on validation at most this: the starting policy counts as converged
EVAL_KEYS = ("accuracy", "ci_low", "ci_high", "correct", "total")

GRM_QUALITY_KEYS: dict[str, str] = {
    "validation_wrong": "held-out wrong predictions evaluated",
    "validation_correct": "held-out correct predictions evaluated",
    "error_step_accuracy": "first error step equal to the teacher's",
    "rewrite_exact_match": "rewrite identical to the teacher's",
    "rewrite_answer_correct": "rewrite reaches the gold answer",
    "rewrite_mean_edit_ratio": "mean token edit ratio d(y, z) / max(|y|, |z|) of the GRM's rewrites",
    "token_flag_precision": "tokens with p_t < 0.5 that the teacher's rewrite changes",
    "token_flag_recall": "tokens the teacher's rewrite changes that have p_t < 0.5",
    "token_flag_f1": "F1 of the two above",
    "token_flag_recall_first_error_step": "recall on the first wrong step's own tokens",
    "correct_tokens_flagged": "tokens of correct predictions with p_t < 0.5 (false alarms)",
}

# training-curve panels: (title, keys plotted together, x axis); a panel appears when one of its keys has data
CURVE_PANELS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("validation accuracy (in training)", ("val_accuracy",), "epoch"),
    ("loss", ("loss", "loss_rl", "loss_ir"), "step"),
    ("clip fraction", ("clip_frac",), "step"),
    ("approx. KL", ("approx_kl",), "step"),
    ("ratio mean", ("ratio_mean",), "step"),
    ("learning rate", ("lr",), "step"),
    ("grad norm", ("grad_norm",), "step"),
)
X_LABELS = {"step": "optimizer step", "epoch": "epoch"}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#1f2328;line-height:1.45}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0}th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{background:#f6f8fa;border-left:4px solid #0969da;padding:.5em .8em}
.figure img{max-width:100%;border:1px solid #d0d7de}
.example{border:1px solid #d0d7de;border-radius:6px;padding:.6em 1em;margin:1.2em 0}
.example h3{margin:.2em 0 .4em}.badge{display:inline-block;border-radius:1em;padding:0 .6em;font-size:.85em;color:#fff}
.badge.ok{background:#1a7f37}.badge.bad{background:#cf222e}
.meta{color:#57606a;font-size:.9em}.question{white-space:pre-wrap;background:#f6f8fa;padding:.4em .6em;border-radius:4px}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.sol{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;white-space:pre-wrap;
background:#fff;border:1px solid #d0d7de;border-radius:4px;padding:.5em;line-height:1.7}
.tok{border-radius:2px}.tok.edit{background:#fde68a;text-decoration:underline;text-decoration-color:#b45309}
table.steps td{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em}
tr.errstep td{background:#fff1f0}
.legend span{padding:0 .4em;margin-right:.6em}
"""


# --------------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class RunInputs:
    """The standard input files of a run directory, as :func:`find_run_inputs` found them."""

    eval_metrics: dict[str, dict[str, Path]]
    grm_quality: Path | None
    stage_metrics: dict[str, Path]
    train_logs: dict[str, Path]
    token_rewards: Path | None
    missing: list[str]


def find_run_inputs(
    run_dir: PathLike,
    *,
    policies: Sequence[str] = MAIN_POLICIES,
    splits: Sequence[str] = ("validation", "test"),
) -> RunInputs:
    """Locate the standard report inputs in ``results/<run>/`` (for use outside Snakemake).

    Files that do not exist are left out and listed in ``missing``; at least one evaluation's
    ``metrics.json`` must exist.

    Raises:
        DataError: ``run_dir`` is not a directory or holds no ``eval/<policy>/<split>/metrics.json``.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"{run}: run directory not found")
    missing: list[str] = []

    def have(rel: str) -> Path | None:
        p = run / rel
        if p.is_file():
            return p
        missing.append(str(p))
        return None

    evals: dict[str, dict[str, Path]] = {}
    for policy in policies:
        for split in splits:
            p = have(f"eval/{policy}/{split}/metrics.json")
            if p is not None:
                evals.setdefault(policy, {})[split] = p
    if not evals:
        raise DataError(f"{run}: no eval/<policy>/<split>/metrics.json for policies {list(policies)} and "
                        f"splits {list(splits)}: evaluate a policy first")
    stage = {name: p for name, rel in (("teacher", "teacher/metrics.json"), ("grm rewrites", "grm/rewrites_metrics.json"),
                                       ("label", "label/metrics.json")) if (p := have(rel)) is not None}
    logs = {name: p for name in ("policy_sft", "grm", "sft_gold", "rl") if (p := have(f"train_logs/{name}.jsonl")) is not None}
    return RunInputs(eval_metrics=evals, grm_quality=have("grm/quality.json"), stage_metrics=stage, train_logs=logs,
                     token_rewards=have("label/token_rewards.parquet"), missing=missing)


def eval_paths_by_policy(paths: Sequence[PathLike]) -> dict[str, dict[str, str]]:
    """Group ``.../eval/<policy>/<split>/metrics.json`` paths as ``{policy: {split: path}}``.

    Raises:
        ValueError: a path does not have that shape (the message names it).
    """
    out: dict[str, dict[str, str]] = {}
    for path in paths:
        parts = Path(path).parts
        if len(parts) < 4 or parts[-4] != "eval" or parts[-1] != "metrics.json":
            raise ValueError(f"{path}: expected a path .../eval/<policy>/<split>/metrics.json")
        out.setdefault(parts[-3], {})[parts[-2]] = str(path)
    return out


def _json_object(path: PathLike) -> dict[str, Any]:
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _load_eval(eval_metrics: Mapping[str, Mapping[str, PathLike]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for policy, by_split in eval_metrics.items():
        for split, path in by_split.items():
            m = _json_object(path)
            absent = [k for k in EVAL_KEYS if m.get(k) is None]
            if absent:
                raise DataError(f"{path}: evaluation metrics lack {absent}")
            for k in ("accuracy", "ci_low", "ci_high"):
                if not isinstance(m[k], (int, float)) or not 0 <= m[k] <= 1:
                    raise DataError(f"{path}: {k} must be a number in [0, 1], got {m[k]!r}")
            out.setdefault(policy, {})[split] = m
    return out


def _load_log(path: PathLike) -> list[dict[str, Any]]:
    records = []
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj.get("step"), (int, float)) or isinstance(obj.get("step"), bool):
            raise DataError(f"{path}:{lineno}: record without a numeric 'step'")
        records.append(obj)
    if not records:
        raise DataError(f"{path}: empty training log (no records)")
    return records


def _load_token_rewards(path: PathLike) -> pa.Table:
    """The token_rewards table, its per-token lists checked for equal lengths (vectorised: files are large)."""
    table = read_parquet(path, TOKEN_REWARDS)
    for ref, others in (("tokens", ("rewards", "grm_probs")), ("imitation_tokens", ("imitation_weights",))):
        n = pc.list_value_length(table.column(ref))
        for col in others:
            bad = pc.not_equal(pc.list_value_length(table.column(col)), n)
            if pc.any(bad).as_py():
                i = bad.to_pylist().index(True)
                raise DataError(f"{path}: row {i} ({table.column('sample_id')[i].as_py()}): {ref} "
                                f"({n[i].as_py()}) and {col} ({len(table.column(col)[i])}) differ in length")
    return table


def _kept_weight(table: pa.Table) -> float | None:
    """:func:`infer_kept_weight` on the table's correct rows, without converting every row to Python."""
    correct = table.filter(table.column("correct"))
    values = pc.unique(pc.list_flatten(correct.column("imitation_weights"))).to_pylist() if correct.num_rows else []
    return infer_kept_weight([True], [values]) if values else None


def select_examples(correct: Sequence[bool], n: int, seed: int) -> list[int]:
    """Row indices of ``min(n, len(correct))`` examples, drawn with ``random.Random(seed)``.

    Up to half are incorrect (more only when there are too few correct rows to fill ``n``); returned in
    row order.
    """
    if n < 0:
        raise ValueError(f"n_examples must be >= 0, got {n}")
    wrong = [i for i, c in enumerate(correct) if not c]
    right = [i for i, c in enumerate(correct) if c]
    n = min(n, len(correct))
    n_wrong = min(len(wrong), max(n // 2, n - len(right)))
    rng = random.Random(seed)
    chosen = rng.sample(wrong, n_wrong) + rng.sample(right, n - n_wrong)
    return sorted(chosen)


# --------------------------------------------------------------------------------------------------
# formatting


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e6:
            return f"{value:.1f}"
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, dict)):
        text = json.dumps(value, sort_keys=True, default=str)
        return text if len(text) <= 160 else text[:157] + "..."
    return str(value)


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key in obj:
        value = obj[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items += _flatten(value, f"{name}.")
        else:
            items.append((name, value))
    return items


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _policy_label(policy: str) -> str:
    return POLICY_LABELS.get(policy, policy)


def _esc(text: str) -> str:
    """HTML-escape ``text`` (quotes too) and turn line breaks into ``<br>``."""
    return html.escape(text, quote=True).replace("\r\n", "\n").replace("\n", "<br>")


def _md_text(text: str) -> str:
    """Markdown prose/cell text with ``&``, ``<`` and ``>`` as entities (no raw HTML reaches a renderer)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _fence(text: str, lang: str = "") -> str:
    """A Markdown code fence long enough that ``text`` cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _rgba(reward: float, pos_clip: tuple[float, float], neg_clip: tuple[float, float]) -> str | None:
    level = reward_level(reward, pos_clip, neg_clip)
    if level == 0.0:
        return None
    alpha = 0.15 + 0.75 * level
    rgb = "220,38,38" if reward < 0 else "22,163,74"
    return f"rgba({rgb},{alpha:.2f})"


def _token_spans(tokens: Sequence[str], rewards: Sequence[float], probs: Sequence[float],
                 pos_clip: tuple[float, float], neg_clip: tuple[float, float]) -> str:
    out = []
    for tok, r, p in zip(tokens, rewards, probs):
        colour = _rgba(r, pos_clip, neg_clip)
        cls = "tok neg" if r < 0 else "tok pos" if r > 0 else "tok"
        style = f' style="background:{colour}"' if colour else ""
        out.append(f'<span class="{cls}"{style} title="p_t={p:.3f} r_t={r:+.3f}">{_esc(tok)}</span>')
    return "".join(out)


def _rewrite_spans(tokens: Sequence[str], weights: Sequence[float], kept_weight: float | None) -> str:
    out = []
    for tok, w, edited in zip(tokens, weights, edited_mask(weights, kept_weight)):
        cls = "tok edit" if edited else "tok"
        out.append(f'<span class="{cls}" title="w={w:g}">{_esc(tok)}</span>')
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# figures


def _series(records: Sequence[Mapping[str, Any]], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(float(r.get(x, r["step"])))
            ys.append(float(v))
    return xs, ys


def _curves_png(name: str, records: Sequence[Mapping[str, Any]]) -> tuple[bytes, list[str]]:
    """One PNG (bytes) of a training log's curves against step, and the keys it plots."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(title, [k for k in keys if _series(records, k)[0]], x) for title, keys, x in CURVE_PANELS]
    panels = [(t, ks, x) for t, ks, x in panels if ks]
    if not panels:
        raise DataError(f"training log {name!r}: no numeric loss/lr/... values to plot")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    for i, (title, keys, x) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for k in keys:
            xs, ys = _series(records, k, x)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=k, linewidth=1.3)
        if keys == ["val_accuracy"]:
            best = [r for r in records if r.get("best_step") == r.get("step") and "val_accuracy" in r]
            if best:  # the evaluation whose weights the stage kept (select: best)
                top = max(best, key=lambda r: r["val_accuracy"])
                ax.plot([top.get(x, top["step"])], [top["val_accuracy"]], marker="*", markersize=12,
                        color="#d97706", linestyle="none", label="best")
                ax.legend(fontsize="small")
        ax.set_title(title)
        ax.set_xlabel(X_LABELS[x])
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize="small")
        if keys == ["lr"]:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    fig.suptitle(f"training log: {name}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue(), sorted({k for _, ks, _ in panels for k in ks})


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return cleaned or "log"


# --------------------------------------------------------------------------------------------------
# sections (each returns (html, markdown))


def _accuracy_section(evals: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> tuple[str, str, dict[str, str]]:
    policies = [p for p in MAIN_POLICIES if p in evals] + sorted(p for p in evals if p not in MAIN_POLICIES)
    splits: list[str] = []
    for p in policies:
        splits += [s for s in evals[p] if s not in splits]
    conf = {m.get("confidence", 0.95) for by in evals.values() for m in by.values()}
    conf_txt = f"{100 * conf.pop():.0f}%" if len(conf) == 1 else "per-row"
    baselines = [b for b in ("sft", "sft_gold") if b in evals and "rlmec" in evals]  # RLMEC - each of them
    head = ["split", *[f"{_policy_label(p)} accuracy [{conf_txt} CI] (correct/total)" for p in policies]]
    head += [f"RLMEC − {_policy_label(b)}" for b in baselines]
    rows: list[list[str]] = []
    for s in splits:
        cells = [s]
        for p in policies:
            m = evals[p].get(s)
            cells.append(f"{_pct(m['accuracy'])} [{_pct(m['ci_low'])}, {_pct(m['ci_high'])}] ({m['correct']}/{m['total']})"
                         if m else "n/a")
        for b_name in baselines:
            a, b = evals["rlmec"].get(s), evals[b_name].get(s)
            cells.append(f"{100 * (a['accuracy'] - b['accuracy']):+.1f} pp" if a and b else "n/a")
        rows.append(cells)

    verdicts: dict[str, str] = {}
    sentences: list[str] = []
    names = {"sft": "SFT's", "sft_gold": "more SFT on the gold solutions (SFT-gold)'s"}
    for b_name in baselines:
        for s in sorted(splits, key=lambda x: (x != "test", splits.index(x))):
            a, b = evals["rlmec"].get(s), evals[b_name].get(s)
            if not (a and b):
                continue
            ci = f"{conf_txt} interval [{_pct(b['ci_low'])}, {_pct(b['ci_high'])}]"
            if a["accuracy"] > b["ci_high"]:
                verdict = "above"
                sentences.append(f"On {s}, RLMEC's accuracy ({_pct(a['accuracy'])}) is above {names[b_name]} {ci}.")
            elif a["accuracy"] < b["ci_low"]:
                verdict = "below"
                sentences.append(f"On {s}, RLMEC's accuracy ({_pct(a['accuracy'])}) is below {names[b_name]} {ci}.")
            else:
                verdict = "within"
                sentences.append(f"On {s}, RLMEC's accuracy ({_pct(a['accuracy'])}) is not above {names[b_name]} {ci}: "
                                 "no clear improvement.")
            verdicts[s if b_name == "sft" else f"{s} vs {b_name}"] = verdict
    if "sft" not in baselines:
        sentences.append("RLMEC and SFT are not both evaluated: no comparison.")
    gold, start = evals.get("sft_gold", {}).get("validation"), evals.get("sft", {}).get("validation")
    if gold and start:
        gain = 100 * (gold["accuracy"] - start["accuracy"])
        sentences.append(
            f"Convergence of the starting policy: more SFT on the gold solutions moves validation accuracy by "
            f"{gain:+.1f} pp ({'at most' if gain <= CONVERGED_POINTS else 'more than'} {CONVERGED_POINTS:g} points: "
            f"{'converged' if gain <= CONVERGED_POINTS else 'NOT converged; gains over SFT mix in more supervised training'}).")

    intro = ("Greedy-decoding accuracy of each policy; SFT is the starting policy (bootstrapped or given), "
             "SFT-gold the starting policy trained further on the gold solutions of the problems the RL update "
             "sees (same optimizer, batch and number of optimizer steps; the strongest simple baseline), RLMEC the "
             "policy after the RL update. Intervals are Wilson score intervals.")
    h = [f"<p>{_esc(intro)}</p>", _html_table(head, rows, numeric_from=1)]
    h += [f'<p class="verdict">{_esc(t)}</p>' for t in sentences]
    md = [intro, _md_table(head, rows), *[f"**{t}**" for t in sentences]]
    for s in splits:  # accuracy by the problems' attributes (MATH level and type, MMLU subject), when they have any
        keys = sorted({k for p in policies for k in evals[p].get(s, {}).get("by_attribute", {})})
        for key in keys:
            values = sorted({v for p in policies for v in evals[p].get(s, {}).get("by_attribute", {}).get(key, {})})
            b_head = [key, *[f"{_policy_label(p)} ({s})" for p in policies]]
            b_rows = []
            for v in values:
                cells = [v]
                for p in policies:
                    m = evals[p].get(s, {}).get("by_attribute", {}).get(key, {}).get(v)
                    cells.append(f"{_pct(m['accuracy'])} ({m['correct']}/{m['total']})" if m else "n/a")
                b_rows.append(cells)
            title = f"Accuracy on {s} by {key}"
            h += [f"<h3>{_esc(title)}</h3>", _html_table(b_head, b_rows, numeric_from=1)]
            md += [f"### {title}", _md_table(b_head, b_rows)]
    return "\n".join(h), "\n\n".join(md), verdicts


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 99) -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if j >= numeric_from else ""}>{_esc(c)}</td>' for j, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _kv_section(obj: Mapping[str, Any], descriptions: Mapping[str, str] | None = None) -> tuple[str, str]:
    if descriptions is not None:
        order = [k for k in descriptions if k in obj] + [k for k in obj if k not in descriptions]
        obj = {k: obj[k] for k in order}
    items = _flatten(obj)
    if not items:
        return "<p><em>(empty)</em></p>", "_(empty)_"
    if descriptions is not None:
        head = ["metric", "value", "meaning"]
        rows = [[k, _fmt(v), descriptions.get(k, "")] for k, v in items]
    else:
        head = ["key", "value"]
        rows = [[k, _fmt(v)] for k, v in items]
    return _html_table(head, rows), _md_table(head, rows)


def _example_section(
    i: int,
    index: int,
    row: Mapping[str, Any],
    pos_clip: tuple[float, float],
    neg_clip: tuple[float, float],
    kept_weight: float | None,
) -> tuple[str, str]:
    tokens, rewards, probs = row["tokens"], row["rewards"], row["grm_probs"]
    sums = step_reward_sums(tokens, rewards) if tokens else []
    steps = solution_steps("".join(tokens))
    err = row["error_step"]
    ok = bool(row["correct"])
    n_edit = sum(edited_mask(row["imitation_weights"], kept_weight))
    meta = (f"row {index}; problem {row['problem_id']}; gold answer {row['gold_answer']!r}; first error step "
            f"{err if err is not None else 'unknown'}; rewrite by {row['rewrite_source']}; edit distance "
            f"{row['edit_distance']} (ratio {row['edit_ratio']:.3f}); {n_edit} edited rewrite token(s)")
    step_rows = [[f"[{k}]", step, f"{s:+.3f}"] for k, (step, s) in enumerate(zip(steps, sums))]

    badge = '<span class="badge ok">correct</span>' if ok else '<span class="badge bad">incorrect</span>'
    trs = "".join(
        f'<tr{" class=errstep" if err is not None and k == err else ""}><td>{_esc(a)}</td><td>{_esc(b)}</td>'
        f"<td class=num>{_esc(c)}</td></tr>"
        for k, (a, b, c) in enumerate(step_rows)
    )
    steps_html = (f'<table class="steps"><thead><tr><th>step</th><th>text</th><th>Σ r_t</th></tr></thead>'
                  f"<tbody>{trs}</tbody></table>") if step_rows else "<p><em>(no steps)</em></p>"
    h = "\n".join([
        '<div class="example">',
        f"<h3>{i}. {_esc(str(row['sample_id']))} {badge}</h3>",
        f'<p class="meta">{_esc(meta)}</p>',
        f'<div class="question">{_esc(row["question"])}</div>',
        '<div class="cols"><div>',
        f"<h4>prediction y (reward sum {sum(rewards):+.3f})</h4>",
        f'<div class="sol">{_token_spans(tokens, rewards, probs, pos_clip, neg_clip)}</div>',
        steps_html,
        "</div><div>",
        f"<h4>rewrite z ({n_edit} edited token(s) highlighted)</h4>",
        f'<div class="sol">{_rewrite_spans(row["imitation_tokens"], row["imitation_weights"], kept_weight)}</div>',
        "</div></div></div>",
    ])
    md = "\n\n".join([
        f"### {i}. `{row['sample_id']}` ({'correct' if ok else 'incorrect'})",
        _md_cell(meta),
        "Question:\n\n" + _fence(row["question"]),
        f"Prediction y (reward sum {sum(rewards):+.3f}; `[token|r=...]` marks a penalised token):\n\n"
        + _fence(marked_prediction(tokens, rewards)),
        _md_table(["step", "text", "Σ r_t"], [[a + (" ← first error" if err is not None and k == err else ""), b, c]
                                             for k, (a, b, c) in enumerate(step_rows)]) if step_rows else "_(no steps)_",
        "Rewrite z (`{+token+}` marks an edited token):\n\n"
        + _fence(marked_rewrite(row["imitation_tokens"], row["imitation_weights"], kept_weight)),
    ])
    return h, md


# --------------------------------------------------------------------------------------------------
# the report


def build_report(
    *,
    eval_metrics: Mapping[str, Mapping[str, PathLike]],
    grm_quality: PathLike | None,
    stage_metrics: Mapping[str, PathLike],
    train_logs: Mapping[str, PathLike],
    token_rewards: PathLike | None,
    out_html: PathLike,
    out_md: PathLike,
    fig_dir: PathLike,
    title: str,
    n_examples: int = 10,
    seed: int = 0,
    pos_clip: Sequence[float] = DEFAULT_POS_CLIP,
    neg_clip: Sequence[float] = DEFAULT_NEG_CLIP,
    kept_weight: float | None = None,
    comparison: PathLike | None = None,
    comparison_chart: PathLike | None = None,
    rounds: PathLike | None = None,
    rounds_chart: PathLike | None = None,
) -> dict[str, Any]:
    """Write the run report (see the module docstring).

    Args:
        eval_metrics: ``{policy: {split: metrics.json}}`` (the evaluate stage's files; keys ``accuracy``,
            ``ci_low``, ``ci_high``, ``correct``, ``total``; policies ``sft`` and ``rlmec`` are compared).
        grm_quality: ``grm/quality.json``, or None to leave the section out.
        stage_metrics: ``{section title: metrics JSON}`` (any JSON object; nested objects are flattened
            with dots).
        train_logs: ``{name: JSONL}``, one record per logged optimizer step with a numeric ``step``; one
            figure ``<fig_dir>/<name>.png`` each.
        token_rewards: ``label/token_rewards.parquet`` (schema ``TOKEN_REWARDS``), or None. A file with no
            rows gives a report that says so.
        out_html, out_md, fig_dir: outputs (``fig_dir`` is replaced as a whole).
        title: the report's heading.
        n_examples: example solutions to show (``min(n_examples, rows)``; up to half incorrect).
        seed: seed of the example draw.
        pos_clip, neg_clip: the label clip ranges; a token's colour intensity is its reward relative to them.
        kept_weight: the imitation weight of a kept rewrite token (``label.kept_weight``); other weights
            mark edited tokens. None: inferred from the correct rows (see ``inspect.infer_kept_weight``).
        comparison: ``compare/table.json`` (``rlmec_core.compare.build_comparison``), or None. When given, the
            methods table (and the learning-rate sweep) is the report's first, main section.
        comparison_chart: ``compare/accuracy.png``, embedded under the methods table.
        rounds: the accuracy-by-round JSON of iterative RLMEC (``rlmec_core.rounds.build_rounds``), or None.
            When given, a section "Accuracy by round" follows the methods table (or the accuracy section
            when there is no comparison): the per-round table, where each method's rounds stop paying, and
            the GRM's quality per round.
        rounds_chart: its chart (PNG), embedded in that section.

    Returns:
        ``{"html", "md", "figures", "accuracy", "verdict", "n_labelled", "examples"}``: the paths written,
        the accuracy per policy and split, RLMEC vs SFT's interval per split (``above``/``within``/
        ``below``), the number of labelled rows and the sample ids shown.

    Raises:
        DataError: an input is missing, empty or malformed (the message names the file).
        ValueError: ``n_examples`` is negative or a clip pair is malformed.
    """
    pos = check_clip("pos_clip", pos_clip)
    neg = check_clip("neg_clip", neg_clip)
    if n_examples < 0:
        raise ValueError(f"n_examples must be >= 0, got {n_examples}")
    if not eval_metrics or not any(eval_metrics.values()):
        raise DataError("build_report: no evaluation metrics given")

    # read and check every input first: nothing is written when one is bad
    evals = _load_eval(eval_metrics)
    quality = _json_object(grm_quality) if grm_quality is not None else None
    stages = {name: _json_object(path) for name, path in stage_metrics.items()}
    logs = {name: _load_log(path) for name, path in train_logs.items()}
    labelled = _load_token_rewards(token_rewards) if token_rewards is not None else None
    compared = _json_object(comparison) if comparison is not None else None
    if compared is not None and not isinstance(compared.get("methods"), dict):
        raise DataError(f"{comparison}: not a comparison table (no 'methods' object)")
    chart = Path(comparison_chart).read_bytes() if comparison_chart is not None else None
    by_round = _json_object(rounds) if rounds is not None else None
    if by_round is not None and not isinstance(by_round.get("methods"), dict):
        raise DataError(f"{rounds}: not an accuracy-by-round table (no 'methods' object)")
    if rounds_chart is not None and not Path(rounds_chart).is_file():
        raise DataError(f"{rounds_chart}: file not found")
    r_chart = Path(rounds_chart).read_bytes() if rounds_chart is not None else None

    out_html, out_md, fig_dir = Path(out_html), Path(out_md), Path(fig_dir)
    figures: dict[str, tuple[bytes, list[str]]] = {}
    for name, records in logs.items():
        try:
            figures[_safe_name(name)] = _curves_png(name, records)
        except DataError as exc:
            raise DataError(f"{train_logs[name]}: {exc}") from exc
    if len(figures) != len(logs):
        raise ValueError(f"train_logs names {list(logs)} collide once made file names")

    h: list[str] = [f"<h1>{_esc(title)}</h1>"]
    md: list[str] = [f"# {_md_cell(title)}"]
    rounds_first = by_round is not None and compared is not None  # right after the methods table
    sections = (["Methods compared"] if compared is not None else []) \
        + (["Accuracy by round"] if rounds_first else []) + ["Accuracy"] + (["Accuracy by round"] if by_round is not None and not rounds_first else []) \
        + (["GRM quality"] if quality is not None else []) + (["Stage metrics"] if stages else []) \
        + (["Training curves"] if logs else []) + ["Example solutions"]
    rounds_parts = (_rounds_section(by_round, r_chart, rounds, rounds_chart, out_md)
                    if by_round is not None else ("", ""))
    rounds_h = [f'<h2 id="{_anchor("Accuracy by round")}">Accuracy by round</h2>', rounds_parts[0]]
    rounds_md = ["## Accuracy by round", rounds_parts[1]]
    h.append("<p>" + " · ".join(f'<a href="#{_anchor(s)}">{_esc(s)}</a>' for s in sections) + "</p>")

    if compared is not None:
        c_h, c_md = _comparison_section(compared, chart, comparison, comparison_chart, out_md)
        h += ['<h2 id="methods-compared">Methods compared</h2>', c_h]
        md += ["## Methods compared", c_md]
    if rounds_first:
        h += rounds_h
        md += rounds_md

    acc_h, acc_md, verdicts = _accuracy_section(evals)
    h += ['<h2 id="accuracy">Accuracy</h2>', acc_h]
    md += ["## Accuracy", acc_md]
    if by_round is not None and not rounds_first:
        h += rounds_h
        md += rounds_md

    if quality is not None:
        q_h, q_md = _kv_section(quality, GRM_QUALITY_KEYS)
        intro = ("The trained GRM on held-out problems: its two-step rewrites of wrong predictions against the "
                 "teacher's, and its token probabilities as a detector of the tokens the teacher changed "
                 "(a token is flagged when p_t < 0.5).")
        h += ['<h2 id="grm-quality">GRM quality</h2>', f"<p>{_esc(intro)}</p>", q_h]
        md += ["## GRM quality", intro, q_md]

    if stages:
        h.append('<h2 id="stage-metrics">Stage metrics</h2>')
        md.append("## Stage metrics")
        for name, obj in stages.items():
            s_h, s_md = _kv_section(obj)
            h += [f"<h3>{_esc(name)}</h3>", f'<p class="meta">{_esc(str(stage_metrics[name]))}</p>', s_h]
            md += [f"### {_md_cell(name)}", f"`{stage_metrics[name]}`", s_md]

    fig_paths = {name: fig_dir / f"{name}.png" for name in figures}
    if logs:
        h.append('<h2 id="training-curves">Training curves</h2>')
        md.append("## Training curves")
        for (name, (png, keys)), log_name in zip(figures.items(), logs):
            caption = (f"{log_name}: {', '.join(keys)} against the optimizer step "
                       + ("(val_accuracy, the in-training validation, against the epoch; the star marks the "
                          "evaluation whose weights the stage kept) " if "val_accuracy" in keys else "")
                       + f"({len(logs[log_name])} logged steps; {train_logs[log_name]}).")
            b64 = base64.b64encode(png).decode("ascii")
            h.append(f'<div class="figure"><img alt="{_esc(log_name)} training curves" '
                     f'src="data:image/png;base64,{b64}"><p class="meta">{_esc(caption)}</p></div>')
            rel = Path(os.path.relpath(fig_paths[name], start=out_md.parent)).as_posix()
            md += [f"![{_md_cell(log_name)} training curves]({rel})", _md_cell(caption)]

    h.append('<h2 id="example-solutions">Example solutions</h2>')
    md.append("## Example solutions")
    shown: list[str] = []
    if labelled is None:
        h.append("<p><em>No token rewards given.</em></p>")
        md.append("_No token rewards given._")
    elif labelled.num_rows == 0:
        note = f"No labelled samples: {token_rewards} has no rows."
        h.append(f"<p><em>{_esc(note)}</em></p>")
        md.append(f"_{_md_cell(note)}_")
    else:
        flags = [bool(c) for c in labelled.column("correct").to_pylist()]
        chosen = select_examples(flags, n_examples, seed)
        kept = kept_weight if kept_weight is not None else _kept_weight(labelled)
        intro = (f"{len(chosen)} of {len(flags)} labelled samples ({flags.count(False)} incorrect in all), drawn with "
                 f"seed {seed}. Each token of the prediction is coloured by its reward r_t: red = penalised (the GRM "
                 f"would change it), green = rewarded; the stronger the colour, the closer |r_t| is to the end of the "
                 f"clip range (negative {list(neg)}, positive {list(pos)}). Hover a token for p_t and r_t. Beside it, "
                 "the rewrite z with its edited tokens (inserted or substituted by the minimum-edit alignment) "
                 "highlighted.")
        legend = ('<p class="legend"><span style="background:rgba(220,38,38,0.90)">strongly penalised</span>'
                  '<span style="background:rgba(220,38,38,0.35)">mildly penalised</span>'
                  '<span style="background:rgba(22,163,74,0.90)">strongly rewarded</span>'
                  '<span class="tok edit">edited in the rewrite</span></p>')
        h += [f"<p>{_esc(intro)}</p>", legend]
        md.append(intro)
        rows = labelled.take(pa.array(chosen, pa.int64())).to_pylist()
        for i, (index, row) in enumerate(zip(chosen, rows), start=1):
            e_h, e_md = _example_section(i, index, row, pos, neg, kept)
            h.append(e_h)
            md.append(e_md)
            shown.append(str(row["sample_id"]))

    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            "<body>\n" + "\n".join(h) + "\n</body></html>\n")
    markdown = "\n\n".join(md) + "\n"

    with atomic_path(fig_dir) as tmp:
        tmp.mkdir()
        for name, (png, _) in figures.items():
            (tmp / f"{name}.png").write_bytes(png)
    write_text_atomic(out_md, markdown)
    write_text_atomic(out_html, page)
    log.info("report: %s, %s, %d figure(s) in %s", out_html, out_md, len(figures), fig_dir)
    return {
        "html": str(out_html),
        "md": str(out_md),
        "figures": [str(p) for p in fig_paths.values()],
        "accuracy": {p: {s: {k: m[k] for k in EVAL_KEYS} for s, m in by.items()} for p, by in evals.items()},
        "verdict": verdicts,
        "n_labelled": labelled.num_rows if labelled is not None else None,
        "examples": shown,
    }


def _comparison_section(summary: Mapping[str, Any], chart: bytes | None, path: PathLike | None,
                        chart_path: PathLike | None, out_md: Path) -> tuple[str, str]:
    """The methods table of the comparison (issue 7), its verdict, chart and learning-rate sweep."""
    from rlmec_core.compare import attribution_lines, comparison_head, comparison_intro, comparison_rows, sweep_table

    try:
        rows, sentence = comparison_rows(summary)
        head = comparison_head(summary)
        intro = comparison_intro(summary)
        attribution = attribution_lines(summary)
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: malformed comparison table ({exc!r})") from exc
    h = [f"<p>{_esc(intro)}</p>", _html_table(head, rows, numeric_from=1), f"<p><b>{_esc(sentence)}</b></p>"]
    md = [intro, _md_table(head, rows), f"**{sentence}**"]
    if attribution:
        h += ["<h3>Where the difference comes from</h3>",
              "<ul>" + "".join("<li>" + re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(line)) + "</li>"
                               for line in attribution) + "</ul>"]
        md += ["### Where the difference comes from", "\n".join(f"- {line}" for line in attribution)]
    if chart is not None:
        fig_h, fig_md = _chart_figure(chart, chart_path, out_md, "test accuracy per method",
                                      "Greedy test accuracy per method, mean +- std over seeds.")
        h.append(fig_h)
        md.append(fig_md)
    if summary.get("sweep"):
        head, s_rows, s_intro = sweep_table(summary["sweep"])
        plain = [[c.replace("**", "") for c in r] for r in s_rows]
        h += ["<h3>Learning rates chosen on the validation split</h3>", f"<p>{_esc(s_intro)}</p>",
              _html_table(head, plain, numeric_from=1)]
        md += ["### Learning rates chosen on the validation split", s_intro, _md_table(head, s_rows)]
    return "\n".join(h), "\n\n".join(md)


def _rounds_section(summary: Mapping[str, Any], chart: bytes | None, path: PathLike | None,
                    chart_path: PathLike | None, out_md: Path) -> tuple[str, str]:
    """Accuracy by round of iterative RLMEC (``rlmec_core.rounds``): its chart, the per-round table, where
    each method's rounds stop paying, and the GRM's quality per round."""
    from rlmec_core.rounds import grm_table, rounds_intro, rounds_table, stop_lines

    try:
        intro = rounds_intro(summary)
        head, rows = rounds_table(summary)
        stops = stop_lines(summary)
        g_head, g_rows = grm_table(summary)
    except (KeyError, TypeError, IndexError) as exc:
        raise DataError(f"{path}: malformed accuracy-by-round table ({exc!r})") from exc
    h = [f"<p>{_esc(intro)}</p>"]
    md = [intro]
    if chart is not None:
        fig_h, fig_md = _chart_figure(chart, chart_path, out_md, "accuracy by round",
                                      "Greedy accuracy by round per method, mean +- std over seeds; a hollow circle "
                                      "marks the round where a method stops paying.")
        h.append(fig_h)
        md.append(fig_md)
    h += [_html_table(head, rows, numeric_from=1),
          "<ul>" + "".join(f"<li>{_esc(line)}</li>" for line in stops) + "</ul>"]
    md += [_md_table(head, rows), "\n".join(f"- {_md_text(line)}" for line in stops)]
    if g_rows:
        g_intro = ("The GRM refreshed on each round's teacher rewrites against the round-1 GRM (stale), both scored "
                   "on the held-out part of that round's teacher data.")
        h += ["<h3>GRM quality by round</h3>", f"<p>{_esc(g_intro)}</p>", _html_table(g_head, g_rows, numeric_from=4)]
        md += ["### GRM quality by round", g_intro, _md_table(g_head, g_rows)]
    return "\n".join(h), "\n\n".join(md)


def _chart_figure(chart: bytes, chart_path: PathLike | None, out_md: Path, alt: str, caption: str) -> tuple[str, str]:
    """A chart PNG as the HTML report embeds it (base64, with its caption) and as the Markdown summary links
    it (a path relative to the summary)."""
    b64 = base64.b64encode(chart).decode("ascii")
    html = (f'<div class="figure"><img alt="{alt}" src="data:image/png;base64,{b64}">'
            f'<p class="meta">{caption}</p></div>')
    rel = Path(os.path.relpath(Path(chart_path), start=out_md.parent)).as_posix()
    return html, f"![{alt}]({rel})"


def _anchor(section: str) -> str:
    return section.lower().replace(" ", "-")
