"""The run report: ``report.html`` (self-contained), ``summary.md`` and PNG training curves.

:func:`build_report` reads explicitly named files (no globbing of a run directory, so that Snakemake
declares every input) and writes, each atomically:

- ``out_html``: one self-contained page (inline CSS, PNGs embedded as base64);
- ``out_md``: the same content in Markdown, images linked relative to the Markdown file;
- ``fig_dir``: the charts (``data_funnel.png``, ``grm_calibration.png``, ``token_rewards.png``) and one PNG
  of training curves per training log (``<name>.png``).

Sections: (a) greedy accuracy per policy and split with confidence intervals, RLMEC minus SFT, and a
plain sentence on whether RLMEC's accuracy lies above SFT's interval (with the methods table first and
the accuracy by round of iterative RLMEC after it, when given); (b) the data funnel: a chart and tables of
what each stage kept, from the two draws to the tokens the RL update trained on, and what it left out and
why; (c) GRM quality, with a reliability chart of its token probabilities against the teacher's edits;
(d) the token rewards: histograms of ``r_t`` for correct and wrong samples and the share of the RL term's
reward mass ``Σ|r_t|`` on each; (e) training curves; (f) example labelled solutions chosen with a seeded
RNG (a mix of correct and incorrect): the prediction with each token coloured by its reward (red =
penalised, green = rewarded, stronger colour = larger ``|r_t|`` relative to the label clip range; the
tooltip gives ``p_t`` and ``r_t``), its per-step reward sums, and the rewrite with edited tokens
highlighted; (g) raw metrics: every key of the metrics files, collapsed (HTML) or linked (Markdown).

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

import numpy as np
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
from rlmec_core.preflight import STATUSES, Check, read_checks, update_check, update_check_from_log
from rlmec_core.rewards import check_clip, step_reward_sums
from rlmec_core.schemas import TOKEN_REWARDS

__all__ = ["build_report", "find_run_inputs", "RunInputs", "eval_paths_by_policy", "select_examples", "data_funnel",
           "reward_stats", "count_draw", "STAGE_FILES", "DrawCounts", "FunnelStep"]

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
    "flag_threshold": "p_t below which a token counts as flagged",
    "score_backend": "how p_t was computed: vllm (prompt log-probs) or hf (transformers forward passes)",
}

# training-curve panels: (title, keys plotted together, x axis); a panel appears when one of its keys has data
CURVE_PANELS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("validation accuracy (in training)", ("val_accuracy",), "epoch"),
    ("held-out loss (in training)", ("val_loss",), "epoch"),
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
.health{border:1px solid #d0d7de;border-radius:6px;padding:.2em 1em 1em;margin:1em 0}
.health h2{margin-top:.4em}.health td:first-child{white-space:nowrap}
.dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;vertical-align:middle}
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


# The pipeline's stage files by role (``build_report``'s ``stage_metrics``), as paths under results/<run>/. The
# two draws are Parquet (schema SAMPLES: only ``correct`` and ``finish_reason`` are read); the rest are JSON
# objects. ``label_samples`` is the draw the label stage labelled: the rl draw by default (grm.rewrite_draw).
STAGE_FILES: dict[str, str] = {
    "teacher_samples": "samples/sft/teacher.parquet",
    "teacher": "teacher/metrics.json",
    "grm_data": "grm/data_stats.json",
    "label_samples": "samples/sft/rl.parquet",
    "grm_rewrites": "grm/rewrites_metrics.json",
    "label": "label/metrics.json",
}
DRAW_ROLES = ("teacher_samples", "label_samples")


@dataclass(frozen=True)
class DrawCounts:
    """Samples of one draw (``samples/<policy>/<draw>.parquet``) by outcome."""

    samples: int
    correct: int
    wrong: int  # incorrect samples whose prompt fit the policy's context
    prompt_too_long: int  # never generated (finish_reason ``prompt_too_long``): no solution to rewrite


@dataclass(frozen=True)
class RunInputs:
    """The standard input files of a run directory, as :func:`find_run_inputs` found them."""

    eval_metrics: dict[str, dict[str, Path]]
    grm_quality: Path | None
    stage_metrics: dict[str, Path]
    train_logs: dict[str, Path]
    token_rewards: Path | None
    missing: list[str]
    checks: Path | None = None  # checks/preflight.json (the RL stage's pre-flight checks)


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
    stage = {role: p for role, rel in STAGE_FILES.items() if (p := have(rel)) is not None}
    logs = {name: p for name in ("policy_sft", "grm", "sft_gold", "rl") if (p := have(f"train_logs/{name}.jsonl")) is not None}
    return RunInputs(eval_metrics=evals, grm_quality=have("grm/quality.json"), stage_metrics=stage, train_logs=logs,
                     token_rewards=have("label/token_rewards.parquet"), missing=missing,
                     checks=have("checks/preflight.json"))


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


def count_draw(path: PathLike) -> DrawCounts:
    """Count a draw's samples by outcome, reading only its ``correct`` and ``finish_reason`` columns.

    Raises:
        DataError: the file is missing, not Parquet or lacks a column (the message names it).
    """
    import pyarrow.parquet as pq

    from rlmec_core.io import conform
    from rlmec_core.sampling import PROMPT_TOO_LONG
    from rlmec_core.schemas import SAMPLES

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    wanted = pa.schema([SAMPLES.field("correct"), SAMPLES.field("finish_reason")])
    try:
        table = pq.read_table(p, columns=[c for c in wanted.names if c in pq.read_schema(p).names])
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{p}: not a readable Parquet file ({exc})") from exc
    table = conform(table, wanted, where=str(p))
    too_long = pc.fill_null(pc.equal(table.column("finish_reason"), PROMPT_TOO_LONG), False)
    correct = pc.and_(table.column("correct"), pc.invert(too_long))

    def count(mask: pa.ChunkedArray) -> int:
        return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)

    n_correct, n_long = count(correct), count(too_long)
    return DrawCounts(samples=table.num_rows, correct=n_correct, wrong=table.num_rows - n_correct - n_long,
                      prompt_too_long=n_long)


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


def _share(x: float) -> str:
    """A share as a percentage with one decimal, more when that would round a share above 0 to 0.0% or one
    below 1 to 100.0% (up to 4)."""
    for digits in range(1, 5):
        text = f"{100 * x:.{digits}f}"
        if (0 < x and float(text) == 0) or (x < 1 and float(text) == 100):
            continue
        return text + "%"
    return text + "%"


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
    panels = [(title, [k for k in keys if _series(records, k)[0]], x) for title, keys, x in CURVE_PANELS]
    panels = [(t, ks, x) for t, ks, x in panels if ks]
    if not panels:
        raise DataError(f"training log {name!r}: no numeric loss/lr/... values to plot")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, _ = _figure(4.2 * ncols, 3.0 * nrows, axes=False)
    for i, (title, keys, x) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for k in keys:
            xs, ys = _series(records, k, x)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=k, linewidth=1.3)
        if keys in (["val_accuracy"], ["val_loss"]):
            metric = keys[0]
            kept_step = next((r["best_step"] for r in reversed(records) if metric in r and "best_step" in r), None)
            top = next((r for r in records if metric in r and r.get("step") == kept_step), None)
            if top is not None:  # the best evaluation (the weights a stage with select: best kept)
                ax.plot([top.get(x, top["step"])], [top[metric]], marker="*", markersize=12,
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
    return _png(fig), sorted({k for _, ks, _ in panels for k in ks})


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
# the data funnel: from the two draws to the tokens the RL update trained on


FUNNEL_LANES = ("Teacher draw → GRM training data", "RL draw → labels → RL update")
# the report's charts by section, as file names (without .png) in fig_dir
CHART_NAMES = {"Data funnel": "data_funnel", "GRM quality": "grm_calibration", "Token rewards": "token_rewards"}
# why a wrong text's rewrite is not used, by REWRITES status (teacher and GRM rewrites alike)
STATUS_WHY = {
    "wrong_answer": "rewrite reaches a wrong answer",
    "parse_error": "reply not usable (no step label or no continuation)",
    "api_error": "API error after every retry",
    "filtered": "filtered: prompt too long, or edit ratio above teacher.max_edit_ratio",
}


@dataclass(frozen=True)
class FunnelStep:
    """One box of the data funnel: what is counted, how many, and what was left out on the way in.

    ``drops`` holds ``(count, why)`` for what left the path between the previous step of the lane and this
    one (only counts > 0); ``side_input`` is ``(count, what)`` entering from the lane's first step directly
    (the correct samples, which need no rewrite); ``count`` is None when the file it comes from is missing.
    """

    lane: int  # index into FUNNEL_LANES
    label: str
    count: int | None
    unit: str
    detail: str
    source: str
    drops: tuple[tuple[int, str], ...] = ()
    side_input: tuple[int | None, str] | None = None


def _get(obj: Mapping[str, Any], path: PathLike, *keys: str, kind: type | tuple[type, ...] = int) -> Any:
    """``obj[k1][k2]...`` checked to be of ``kind`` (ints exclude bools); DataError naming the file otherwise."""
    value: Any = obj
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            raise DataError(f"{path}: no {'.'.join(keys)!r} (the report's data funnel reads it)")
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise DataError(f"{path}: {'.'.join(keys)!r} must be {kind}, got {value!r}")
    return value


def _drops(*items: tuple[int, str]) -> tuple[tuple[int, str], ...]:
    """The items with a count > 0, largest first."""
    return tuple(sorted(((n, why) for n, why in items if n > 0), key=lambda item: -item[0]))


def _status_drops(statuses: Mapping[str, Any], path: PathLike) -> list[tuple[int, str]]:
    out = []
    for status, n in statuses.items():
        if status == "ok":
            continue
        if isinstance(n, bool) or not isinstance(n, int):
            raise DataError(f"{path}: statuses.{status} must be an integer, got {n!r}")
        out.append((n, STATUS_WHY.get(status, f"status {status}")))
    return out


def _short(role: str, path: PathLike) -> str:
    """A stage file's path as short as its standard name (``teacher/metrics.json``, ``samples/sft/rl.parquet``)."""
    depth = STAGE_FILES[role].count("/") + 1 if role in STAGE_FILES else 2
    return "/".join(Path(path).parts[-depth:])


@dataclass(frozen=True)
class Funnel:
    """The data funnel: its steps, notes on what could not be counted, and sentences that sum it up."""

    steps: list[FunnelStep]
    notes: list[str]
    summary: list[str]


def data_funnel(
    stages: Mapping[str, Mapping[str, Any]],
    draws: Mapping[str, DrawCounts],
    rl_log: Sequence[Mapping[str, Any]] | None,
    paths: Mapping[str, PathLike],
) -> Funnel:
    """The steps of the data funnel from what the stages wrote, notes on what could not be shown, and a summary.

    Args:
        stages: the JSON stage files by role (``teacher``, ``grm_data``, ``grm_rewrites``, ``label``; see
            ``STAGE_FILES``), each missing one leaving its counts out.
        draws: the draws by role (``teacher_samples``, ``label_samples``), counted by :func:`count_draw`.
        rl_log: the RL update's training log (its last record with ``tokens_seen``), or None.
        paths: every given file by role (``rl_log`` for the log), for the sources and error messages.

    Returns:
        ``steps``: 4 in lane 0 (teacher draw, its wrong samples, verified teacher rewrites, GRM training rows)
        and 5 in lane 1 (RL draw, its wrong samples, verified rewrites, labelled rows, RL update); ``notes``
        names each missing input; ``summary``: how many wrong texts each rewriter's rewrite was verified for
        (and its main loss), and what the RL update trained on.

    Raises:
        DataError: a given file lacks a count the funnel needs (the message names the file and key).
    """
    notes = [f"{STAGE_FILES[r]} not given: its counts are left out." for r in STAGE_FILES
             if r not in stages and r not in draws]
    summary: list[str] = []
    if rl_log is None:
        notes.append("train_logs/rl.jsonl not given: the RL update's tokens are left out.")
    src = {role: _short(role, p) for role, p in paths.items()}

    # lane 0: the teacher rewrites its draw; the verified rewrites and correct samples become GRM training rows
    t, td, gd = stages.get("teacher"), draws.get("teacher_samples"), stages.get("grm_data")
    tp = paths.get("teacher", "")
    sent = _get(t, tp, "sent_to_teacher") if t is not None else None
    t_ok = _get(t, tp, "statuses", "ok") if t is not None else None
    t_correct = _get(t, tp, "passthrough_correct") if t is not None else None
    if t is not None:
        summary.append(_verified_sentence("The teacher's", t_ok, sent, "its draw", _get(t, tp, "statuses", kind=Mapping), tp))
    steps = [
        FunnelStep(0, "samples of the teacher draw",
                   td.samples if td else _get(t, tp, "samples") if t is not None else None, "samples",
                   _draw_detail(td), src.get("teacher_samples") or src.get("teacher", "")),
        FunnelStep(0, "wrong samples", td.wrong if td else None, "samples",
                   f"{sent:,} distinct texts (per problem)" if sent is not None else "",
                   src.get("teacher_samples", ""),
                   _drops((td.correct, "correct: to the GRM data as they are (no rewrite)"),
                          (td.prompt_too_long, "prompt too long for the policy: no solution")) if td else ()),
        FunnelStep(0, "verified rewrites by the teacher", t_ok, "distinct texts",
                   f"of {sent:,} distinct wrong texts sent to the teacher ({t.get('teacher_model', '?')})"
                   if t is not None else "", src.get("teacher", ""),
                   _drops((td.wrong - sent if td and sent is not None else 0,
                           "repeat a wrong text of the same problem (one rewrite per distinct text)"),
                          *(_status_drops(_get(t, tp, "statuses", kind=Mapping), tp) if t is not None else ()))),
    ]
    if gd is not None:
        gp = paths["grm_data"]
        parts = {sp: {k: _get(gd, gp, sp, k) for k in ("error_step", "rewrite_of_wrong", "rewrite_of_correct")}
                 for sp in ("train", "validation")}
        from_wrong = sum(v["error_step"] + v["rewrite_of_wrong"] for v in parts.values())
        from_right = sum(v["rewrite_of_correct"] for v in parts.values())
        steps.append(FunnelStep(
            0, "GRM training data rows", _get(gd, gp, "examples"), "rows",
            f"{from_wrong:,} from verified rewrites (error step and rewrite), {from_right:,} correct texts; train "
            f"{sum(parts['train'].values()):,}, held out {sum(parts['validation'].values()):,}", src["grm_data"],
            _drops((t_correct - from_right if t_correct is not None else 0,
                    "correct texts left out to balance the wrong ones (grm.balance_correct)")),
            (t_correct, "distinct correct texts") if t_correct is not None else (None, "correct texts")))
    else:
        steps.append(FunnelStep(0, "GRM training data rows", None, "rows", "", STAGE_FILES["grm_data"]))

    # lane 1: the GRM (or, in the ablation, the teacher) rewrites the draw that the label stage labels
    lab, lp = stages.get("label"), paths.get("label", "")
    by_teacher = lab is not None and str(lab.get("rewrites", "")).replace("\\", "/").endswith("teacher/rewrites.parquet")
    rw_role = "teacher" if by_teacher else "grm_rewrites"
    rw, rp = stages.get(rw_role), paths.get(rw_role, "")
    ld = draws.get("teacher_samples" if by_teacher else "label_samples")
    draw_src = src.get("teacher_samples" if by_teacher else "label_samples") or src.get(rw_role, "")
    distinct_wrong = (_get(rw, rp, "sent_to_teacher" if by_teacher else "wrong") if rw is not None else None)
    rw_ok = _get(rw, rp, "statuses", "ok") if rw is not None else None
    rewriter = "the teacher" if by_teacher else "the GRM"
    # the draw by its file's name: rl unless the GRM rewrote the teacher's draw (grm.rewrite_draw: teacher)
    stem = Path(paths["label_samples"]).stem if not by_teacher and "label_samples" in paths else None
    draw_name = ("the teacher draw (label.rewrites: teacher)" if by_teacher else "the RL draw" if stem in (None, "rl")
                 else f"the {stem} draw")
    if rw is not None:
        summary.append(_verified_sentence("The teacher's" if by_teacher else "The GRM's", rw_ok, distinct_wrong,
                                          draw_name, _get(rw, rp, "statuses", kind=Mapping), rp))
    steps += [
        FunnelStep(1, "samples of " + draw_name,
                   ld.samples if ld else _get(rw, rp, "samples") if rw is not None else None, "samples",
                   _draw_detail(ld), draw_src),
        FunnelStep(1, "wrong samples", ld.wrong if ld else None, "samples",
                   f"{distinct_wrong:,} distinct texts (per problem)" if distinct_wrong is not None else "",
                   draw_src,
                   _drops((ld.correct, "correct: to the labels as they are (no rewrite)"),
                          (ld.prompt_too_long, "prompt too long for the policy: no solution")) if ld else ()),
        FunnelStep(1, f"rewritten by {rewriter} (verified)", rw_ok, "distinct texts",
                   (f"of {distinct_wrong:,} distinct wrong texts" + ("" if by_teacher else
                    ", by the GRM trained on the rows above")) if distinct_wrong is not None else "",
                   src.get(rw_role, STAGE_FILES[rw_role]),
                   _drops((ld.wrong - distinct_wrong if ld and distinct_wrong is not None else 0,
                           "repeat a wrong text of the same problem (one rewrite per distinct text)"),
                          *(_status_drops(_get(rw, rp, "statuses", kind=Mapping), rp) if rw is not None else ()))),
    ]
    if lab is not None:
        n_lab, n_wrong = _get(lab, lp, "labelled"), _get(lab, lp, "labelled_wrong")
        summary.append(f"The labels hold {n_lab:,} rows: {_get(lab, lp, 'labelled_correct'):,} correct samples and "
                       f"{n_wrong:,} wrong ones" + (f" ({_share(n_wrong / n_lab)} wrong)." if n_lab else "."))
        rows_in = _get(lab, lp, "rewrite_rows")
        right_in = rows_in - distinct_wrong if distinct_wrong is not None else None
        steps.append(FunnelStep(
            1, "labelled rows", _get(lab, lp, "labelled"), "rows",
            f"{_get(lab, lp, 'labelled_correct'):,} correct + {_get(lab, lp, 'labelled_wrong'):,} wrong; "
            f"{_get(lab, lp, 'reward_tokens'):,} tokens of y with a reward r_t", src["label"],
            _drops((_get(lab, lp, "correct_duplicates"), "correct texts repeating a kept correct solution of "
                    "the same problem"),
                   (_get(lab, lp, "too_long"), "longer than the GRM's or the policy's context")),
            (right_in, "distinct correct texts")))
    else:
        steps.append(FunnelStep(1, "labelled rows", None, "rows", "", STAGE_FILES["label"]))
    last = next((r for r in reversed(rl_log or []) if "tokens_seen" in r), None)
    if last is not None:
        rl_path = paths.get("rl_log", "train_logs/rl.jsonl")
        tokens = _get(last, rl_path, "tokens_seen")
        examples = _get(last, rl_path, "examples_seen")
        epoch = last.get("epoch")
        steps.append(FunnelStep(
            1, "tokens trained on (RL update)", tokens, "tokens",
            f"{examples:,} examples" + (f" in {epoch:.3g} epochs" if isinstance(epoch, (int, float)) else "")
            + "; the tokens of prompt + y and prompt + z that the forward passes read",
            _short("rl_log", rl_path) if "rl_log" in paths else "train_logs/rl.jsonl"))
    else:
        if rl_log is not None:
            notes.append(f"{paths.get('rl_log', 'train_logs/rl.jsonl')}: no record with tokens_seen.")
        steps.append(FunnelStep(1, "tokens trained on (RL update)", None, "tokens", "", "train_logs/rl.jsonl"))
    return Funnel(steps, notes, summary)


def _verified_sentence(whose: str, ok: int, of: int, draw: str, statuses: Mapping[str, Any], path: PathLike) -> str:
    """``<whose> rewrite was verified for ok of the N distinct wrong texts ...``, with the largest failure."""
    text = f"{whose} rewrite was verified for {ok:,} of the {of:,} distinct wrong texts of {draw}"
    text += f" ({_share(ok / of)})" if of else ""
    failures = sorted(_status_drops(statuses, path), key=lambda item: -item[0])
    if failures and failures[0][0] > 0:
        text += f"; the main loss: {failures[0][1]} ({failures[0][0]:,})"
    return text + "."


def _draw_detail(draw: DrawCounts | None) -> str:
    if draw is None:
        return "correct and wrong: samples file not given"
    text = f"{draw.correct:,} correct, {draw.wrong:,} wrong"
    return text + (f", {draw.prompt_too_long:,} prompts too long" if draw.prompt_too_long else "")


def _funnel_png(steps: Sequence[FunnelStep]) -> bytes:
    """The funnel as boxes and arrows, one lane per row (PNG bytes); what each arrow left out in red below
    the box it leads to, the correct samples' direct path as an arc over the lane."""
    import textwrap

    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    lanes = [[s for s in steps if s.lane == k] for k in range(len(FUNNEL_LANES))]
    ncols = max(len(lane) for lane in lanes)
    bw, gap, margin = 2.1, 0.42, 0.12  # inches: box width, gap between boxes, page margin
    title_h, arc_h, box_h, drop_h = 0.35, 0.55, 1.8, 1.15
    lane_h = title_h + arc_h + box_h + drop_h
    width, height = 2 * margin + ncols * bw + (ncols - 1) * gap, lane_h * len(lanes) + 0.1
    fig, ax = _figure(width, height, dpi=120)
    ax.set_position((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    small, grey, red, green = 8.3, "#57606a", "#cf222e", "#1a7f37"
    for k, lane in enumerate(lanes):
        top = height - 0.05 - k * lane_h
        ax.text(margin, top, FUNNEL_LANES[k], va="top", ha="left", fontsize=13, fontweight="bold", color="#1f2328")
        y1 = top - title_h - arc_h  # boxes' top edge
        for i, st in enumerate(lane):
            x = margin + i * (bw + gap)
            missing = st.count is None
            ax.add_patch(FancyBboxPatch((x, y1 - box_h), bw, box_h, boxstyle="round,pad=0,rounding_size=0.07",
                                        facecolor="#ffffff" if missing else "#f6f8fa",
                                        edgecolor="#8c959f" if missing else "#0969da", linewidth=1.3,
                                        linestyle="--" if missing else "-"))
            ax.text(x + bw / 2, y1 - 0.08, "\n".join(textwrap.wrap(st.label, 26)), ha="center", va="top",
                    fontsize=10.5, fontweight="bold", color="#1f2328", linespacing=1.1)
            ax.text(x + bw / 2, y1 - 0.72, "missing" if missing else f"{st.count:,}", ha="center", va="center",
                    fontsize=18 if not missing else 12, color="#8c959f" if missing else "#0969da")
            ax.text(x + bw / 2, y1 - 0.95, st.unit, ha="center", va="center", fontsize=9, color=grey)
            ax.text(x + bw / 2, y1 - 1.07, "\n".join(textwrap.wrap(st.detail, 31, break_on_hyphens=False)[:5]),
                    ha="center", va="top",
                    fontsize=small, color=grey, linespacing=1.1)
            if i:
                ax.add_patch(FancyArrowPatch((x - gap + 0.03, y1 - box_h / 2), (x - 0.03, y1 - box_h / 2),
                                             arrowstyle="-|>", mutation_scale=14, color=grey, linewidth=1.5))
            lines = [f"−{n:,} {why}" for n, why in st.drops]
            wrapped = [w for line in lines for w in textwrap.wrap(line, 36, subsequent_indent="   ")]
            if len(wrapped) > 8:
                wrapped = wrapped[:7] + ["   (all of them in the table below)"]
            if wrapped:
                ax.text(x + 0.02, y1 - box_h - 0.07, "\n".join(wrapped), ha="left", va="top", fontsize=small,
                        color=red, linespacing=1.1)
            if st.side_input is not None and i:
                n, what = st.side_input
                x0 = margin + bw / 2
                dist = x + bw / 2 - (x0 + 0.25)
                rad = min(0.9, 2 * (arc_h - 0.24) / dist)  # arc3: the arc's height is rad * dist / 2
                ax.add_patch(FancyArrowPatch((x0 + 0.25, y1 + 0.02), (x + bw / 2, y1 + 0.02),
                                             connectionstyle=f"arc3,rad={-rad:.4f}",
                                             arrowstyle="-|>", mutation_scale=13, color=green, linewidth=1.4))
                ax.text((x0 + 0.25 + x + bw / 2) / 2, y1 + 0.02 + rad * dist / 2 + 0.03,
                        (f"{n:,} " if n is not None else "") + what + ", as they are",
                        ha="center", va="bottom", fontsize=9.5, color=green)
        if len(lane) < ncols:  # the legend in the lane's free space
            x = margin + len(lane) * (bw + gap)
            for dy, text, colour in ((0.1, "→  what the next stage kept", grey),
                                     (0.38, "−n  left out on the way in (why)", red),
                                     (0.66, "arc: correct samples, no rewrite", green),
                                     (0.94, "dashed box: input file missing", "#8c959f")):
                ax.text(x, y1 - dy, text, fontsize=8.8, va="top", color=colour)
    return _png(fig)


def _funnel_tables(steps: Sequence[FunnelStep]) -> tuple[str, str]:
    """The funnel as one table per lane: HTML and Markdown."""
    head = ["step", "count", "breakdown", "left out on the way in (why)", "from"]
    h: list[str] = []
    md: list[str] = []
    for k, title in enumerate(FUNNEL_LANES):
        rows = []
        for st in (s for s in steps if s.lane == k):
            left = "; ".join(f"−{n:,} {why}" for n, why in st.drops)
            rows.append([st.label, "missing" if st.count is None else f"{st.count:,} {st.unit}", st.detail, left,
                         st.source])
        h += [f"<h3>{_esc(title)}</h3>", _html_table(head, rows)]
        md += [f"### {_md_cell(title)}", _md_table(head, rows)]
    return "\n".join(h), "\n\n".join(md)


# --------------------------------------------------------------------------------------------------
# token rewards and GRM calibration


@dataclass(frozen=True)
class RewardStats:
    """The token rewards ``r_t`` of the labelled samples of one kind (correct or wrong)."""

    samples: int
    rewards: np.ndarray  # [tokens] float64: every r_t of these samples, concatenated

    @property
    def mass(self) -> float:
        """Σ|r_t|: the weight of these tokens in the RL term."""
        return float(abs(self.rewards).sum())


def reward_stats(table: pa.Table) -> dict[str, RewardStats]:
    """``{"correct": ..., "wrong": ...}`` from a ``TOKEN_REWARDS`` table (columns ``correct``, ``rewards``)."""
    out = {}
    for kind, flag in (("correct", True), ("wrong", False)):
        part = table.filter(pc.equal(table.column("correct"), flag))
        values = pc.list_flatten(part.column("rewards")).to_numpy(zero_copy_only=False) if part.num_rows else []
        out[kind] = RewardStats(samples=part.num_rows, rewards=np.asarray(values, dtype=np.float64))
    return out


def _reward_png(stats: Mapping[str, RewardStats], pos_clip: tuple[float, float],
                neg_clip: tuple[float, float]) -> bytes:
    """Histograms of r_t for correct and for wrong samples (token counts, log scale) and the share of Σ|r_t|
    on each (PNG bytes)."""
    fig, _ = _figure(12.0, 3.6, axes=False)
    colours = {"correct": "#1a7f37", "wrong": "#cf222e"}
    for i, (kind, clip) in enumerate((("correct", pos_clip), ("wrong", neg_clip))):
        ax = fig.add_subplot(1, 3, i + 1)
        r = stats[kind].rewards
        if r.size == 0:
            ax.text(0.5, 0.5, f"no {kind} samples", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        lo, hi = min(clip[0], float(r.min())), max(clip[1], float(r.max()))
        ax.hist(r, bins=np.linspace(lo, hi, 26) if hi > lo else 1, color=colours[kind], alpha=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{kind} samples: {stats[kind].samples:,} samples, {r.size:,} tokens", fontsize=10)
        ax.set_xlabel("token reward r_t")
        ax.set_ylabel("tokens")
        ax.grid(alpha=0.3)
        share = float((r == 0).mean()) if kind == "correct" else float((r < 0).mean())
        what = "r_t = 0 (p_t <= 0.5)" if kind == "correct" else "penalised (r_t < 0)"
        ax.text(0.03, 0.97, f"mean r_t {r.mean():+.3f}\n{what}: {100 * share:.1f}%", transform=ax.transAxes,
                va="top", ha="left", fontsize=8, bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#d0d7de"})
    ax = fig.add_subplot(1, 3, 3)
    total = sum(s.mass for s in stats.values())
    kinds = ["correct", "wrong"]
    shares = [stats[k].mass / total if total else 0.0 for k in kinds]
    ax.barh(kinds, shares, color=[colours[k] for k in kinds], alpha=0.8)
    for y, (k, share) in enumerate(zip(kinds, shares)):
        ax.text(min(share, 1.0) + 0.02 if share < 0.7 else share - 0.02, y,
                f"{100 * share:.2f}%  (Σ|r_t| = {stats[k].mass:,.1f})", va="center",
                ha="left" if share < 0.7 else "right", fontsize=8.5, color="#1f2328" if share < 0.7 else "white")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_title("share of the RL term's reward mass Σ|r_t|", fontsize=10)
    ax.set_xlabel("share")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _png(fig)


def _reward_section(stats: Mapping[str, RewardStats]) -> tuple[str, str, str]:
    """The token-reward table and its sentences: (html, markdown, the sentence on the reward mass)."""
    total = sum(s.mass for s in stats.values())
    head = ["kind", "samples", "tokens", "mean r_t", "r_t < 0", "r_t = 0", "r_t > 0", "Σ|r_t|", "share of Σ|r_t|"]
    rows = []
    for kind, st in stats.items():
        r, n = st.rewards, max(st.rewards.size, 1)
        rows.append([kind, f"{st.samples:,}", f"{r.size:,}", f"{r.mean():+.4f}" if r.size else "n/a",
                     _pct(float((r < 0).sum()) / n), _pct(float((r == 0).sum()) / n), _pct(float((r > 0).sum()) / n),
                     f"{st.mass:,.1f}", _share(st.mass / total) if total else "n/a"])
    if total:
        share = stats["correct"].mass / total
        sentence = (f"The RL term weighs each token by its reward r_t: {_share(share)} of its total weight Σ|r_t| lies on "
                    f"the tokens of correct samples and {_share(1 - share)} on those of wrong samples"
                    + (": the update mostly reinforces correct solutions, and the token-level penalties of wrong ones "
                       "carry little of the signal." if share > 0.9 else "."))
    else:
        sentence = "Every token reward is 0: the RL term has no signal."
    return _html_table(head, rows, numeric_from=1), _md_table(head, rows), sentence


def _calibration_png(cal: Mapping[str, Any]) -> bytes:
    """Reliability-style chart: share of tokens the teacher edited per p_t bucket, token counts annotated."""
    fig, ax = _figure(8.5, 4.4)
    styles = {"wrong_predictions": ("held-out wrong predictions", "#cf222e", "o"),
              "all_predictions": ("all held-out predictions (correct ones: nothing edited)", "#0969da", "s")}
    bins = cal["wrong_predictions"]
    ax.plot([0, 1], [1, 0], linestyle="--", color="#8c959f", linewidth=1, label="calibrated: share edited = 1 − p_t")
    for key, (label, colour, marker) in styles.items():
        pts = [((r["lo"] + r["hi"]) / 2, r["share_edited"], r["tokens"]) for r in cal[key] if r["tokens"]]
        if not pts:
            continue
        xs, ys, ns = zip(*pts)
        ax.plot(xs, ys, marker=marker, color=colour, label=label, linewidth=1.4)
        for x, y, n in zip(xs, ys, ns):
            ax.annotate(f"{n:,}", (x, y), textcoords="offset points", xytext=(0, 7 if key == "wrong_predictions" else -12),
                        ha="center", fontsize=7, color=colour)
    ax.set_xticks([r["lo"] for r in bins] + [bins[-1]["hi"]])
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.05, 1.08)
    ax.set_xlabel("GRM token probability p_t (bucket; numbers: tokens in it)")
    ax.set_ylabel("share edited by the teacher's rewrite")
    ax.axvline(0.5, color="#57606a", linewidth=0.8, linestyle=":")
    ax.text(0.49, 1.04, "flagged (p_t < 0.5)", ha="right", va="center", fontsize=7.5, color="#57606a")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("GRM calibration on held-out predictions")
    fig.tight_layout()
    return _png(fig)


def _calibration_tables(cal: Mapping[str, Any], path: PathLike | None) -> tuple[str, str, str]:
    """The calibration buckets as a table (html, markdown) and a sentence on the lowest and highest filled
    buckets of the wrong predictions, each beside what a calibrated GRM would give (1 - their mean p_t).

    Raises:
        DataError: ``cal`` is not the ``calibration`` object of ``evaluate_grm`` (the message names ``path``).
    """
    try:
        wrong, every = cal["wrong_predictions"], cal["all_predictions"]

        def bucket(i: int) -> str:
            return f"[{wrong[i]['lo']:.2f}, {wrong[i]['hi']:.2f}" + ("]" if i == len(wrong) - 1 else ")")

        head = ["p_t bucket", "tokens (wrong predictions)", "edited", "share edited", "tokens (all predictions)",
                "share edited (all)"]
        rows = [[bucket(i), f"{w['tokens']:,}", f"{w['edited']:,}",
                 _pct(w["share_edited"]) if w["share_edited"] is not None else "n/a",
                 f"{a['tokens']:,}", _pct(a["share_edited"]) if a["share_edited"] is not None else "n/a"]
                for i, (w, a) in enumerate(zip(wrong, every, strict=True))]
        filled = [i for i, w in enumerate(wrong) if w["tokens"]]
        sentence = ""
        if len(filled) >= 2:
            (lo, hi), (a, b) = (wrong[filled[0]], wrong[filled[-1]]), (filled[0], filled[-1])
            sentence = (f"On the held-out wrong predictions, the teacher edited {_pct(lo['share_edited'])} of the "
                        f"{lo['tokens']:,} tokens with p_t in {bucket(a)} (calibrated: {_pct(1 - lo['mean_p'])}, 1 − "
                        f"their mean p_t) and {_pct(hi['share_edited'])} of the {hi['tokens']:,} tokens with p_t in "
                        f"{bucket(b)} (calibrated: {_pct(1 - hi['mean_p'])}).")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(f"{path}: malformed 'calibration' ({exc!r})") from exc
    return _html_table(head, rows, numeric_from=1), _md_table(head, rows), sentence


def _figure(width: float, height: float, *, axes: bool = True, dpi: int = 100) -> tuple[Any, Any]:
    """A headless matplotlib figure of ``width`` x ``height`` inches (and one axes unless ``axes`` is False)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig, (fig.add_subplot(1, 1, 1) if axes else None)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# the report


HEALTH_COLOURS = {"green": "#1a7f37", "amber": "#b7791f", "red": "#cf222e"}


def _health_section(checks: Sequence[Check], have_preflight: bool) -> tuple[str, str]:
    """The health panel: one row per check, its status as a coloured dot and word, figure, threshold, meaning."""
    worst = max((STATUSES.index(c.status) for c in checks), default=0)
    verdict = {0: "every check is green", 1: "warnings (amber): read them before trusting the figures",
               2: "a stopping check is red: the run stopped, or went on only because its threshold was lowered"}[worst]
    head = ["status", "check", "figure", "threshold", "what it means"]
    rows = [[c.status, c.name, c.figure, c.threshold + (f" ({c.key})" if c.key else ""), c.message] for c in checks]
    note = "" if have_preflight else (" No pre-flight checks file (checks/preflight.json): the run predates them, "
                                      "or its RL stage did not run.")
    h = [f'<div class="health"><h2 id="health">Health</h2><p>{_esc(verdict.capitalize())}.{_esc(note)}</p>']
    if checks:
        h.append('<table class="health-table"><thead><tr>' + "".join(f"<th>{_esc(x)}</th>" for x in head)
                 + "</tr></thead><tbody>")
        for c, row in zip(checks, rows, strict=True):
            dot = (f'<span class="dot" style="background:{HEALTH_COLOURS[c.status]}"></span> '
                   f'<strong style="color:{HEALTH_COLOURS[c.status]}">{c.status}</strong>')
            h.append(f'<tr class="health-{c.status}"><td>{dot}</td>' + "".join(f"<td>{_esc(x)}</td>" for x in row[1:])
                     + "</tr>")
        h.append("</tbody></table>")
    h.append("</div>")
    md = ["## Health", f"{verdict.capitalize()}.{note}"]
    if checks:
        md.append(_md_table(head, [[{"green": "🟢 green", "amber": "🟠 amber", "red": "🔴 red"}[c.status], *row[1:]]
                                   for c, row in zip(checks, rows, strict=True)]))
    return "\n".join(h), "\n\n".join(md)


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
    checks: PathLike | None = None,
    rl_lr: float | None = None,
) -> dict[str, Any]:
    """Write the run report (see the module docstring).

    Args:
        eval_metrics: ``{policy: {split: metrics.json}}`` (the evaluate stage's files; keys ``accuracy``,
            ``ci_low``, ``ci_high``, ``correct``, ``total``; policies ``sft`` and ``rlmec`` are compared).
        grm_quality: ``grm/quality.json``, or None to leave the section out. Its ``calibration`` (written by
            ``evaluate_grm``) is charted; without it the section says so.
        stage_metrics: the stage files by role (``STAGE_FILES``): ``teacher_samples`` and ``label_samples``
            (the draws, Parquet), ``teacher``, ``grm_data``, ``grm_rewrites`` and ``label`` (JSON objects) feed
            the data funnel; a role left out leaves its counts out and the section says so. Every JSON file
            (any other role too) is listed, flattened, under "Raw metrics".
        train_logs: ``{name: JSONL}``, one record per logged optimizer step with a numeric ``step``; one
            figure ``<fig_dir>/<name>.png`` each. The last record of ``rl`` with ``tokens_seen`` ends the data
            funnel.
        token_rewards: ``label/token_rewards.parquet`` (schema ``TOKEN_REWARDS``), or None. A file with no
            rows gives a report that says so.
        out_html, out_md, fig_dir: outputs (``fig_dir`` is replaced as a whole: the charts ``CHART_NAMES`` and
            the training curves, one PNG each).
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
        checks: ``checks/preflight.json`` (``rlmec_core.preflight.run_preflight``), or None. With the update
            check (the RL log's step-0 validation accuracy against its last one when the log has them, else
            RLMEC's validation accuracy against the starting policy's from the evaluate files; ``rl_lr`` and the
            RL log's last step name the learning rate and steps) it makes the health panel at the top.

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
    draws = {role: count_draw(path) for role, path in stage_metrics.items() if role in DRAW_ROLES}
    stages = {role: _json_object(path) for role, path in stage_metrics.items() if role not in DRAW_ROLES}
    logs = {name: _load_log(path) for name, path in train_logs.items()}
    labelled = _load_token_rewards(token_rewards) if token_rewards is not None else None
    calibration = quality.get("calibration") if quality is not None else None
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
    health = read_checks(checks) if checks is not None else []
    from_log = (update_check_from_log(logs["rl"], lr=rl_lr if rl_lr is not None else float("nan"),
                                      where=str(train_logs["rl"])) if "rl" in logs else None)
    if from_log is not None:  # the RL stage's own step-0 and last evaluations (rl.validation)
        health.append(from_log)
    elif all("validation" in evals.get(p, {}) for p in ("sft", "rlmec")):
        rl_steps = [r["step"] for r in logs.get("rl", []) if isinstance(r.get("step"), (int, float))]
        health.append(update_check(evals["sft"]["validation"], evals["rlmec"]["validation"],
                                   lr=rl_lr if rl_lr is not None else float("nan"),
                                   steps=int(max(rl_steps)) if rl_steps else None))

    out_html, out_md, fig_dir = Path(out_html), Path(out_md), Path(fig_dir)
    figures: dict[str, tuple[bytes, list[str]]] = {}
    for name, records in logs.items():
        try:
            figures[_safe_name(name)] = _curves_png(name, records)
        except DataError as exc:
            raise DataError(f"{train_logs[name]}: {exc}") from exc
    if len(figures) != len(logs) or set(figures) & set(CHART_NAMES.values()):
        raise ValueError(f"train_logs names {list(logs)} collide once made file names (with each other or with "
                         f"the report's charts {sorted(CHART_NAMES.values())})")
    funnel_paths = {**stage_metrics, **({"rl_log": train_logs["rl"]} if "rl" in train_logs else {})}
    funnel_all = data_funnel(stages, draws, logs.get("rl"), funnel_paths)
    funnel, funnel_notes = funnel_all.steps, funnel_all.notes
    rewards = reward_stats(labelled) if labelled is not None and labelled.num_rows else None
    charts: dict[str, bytes] = {}  # section -> PNG, written as fig_dir/CHART_NAMES[section].png
    if any(st.count is not None for st in funnel):
        charts["Data funnel"] = _funnel_png(funnel)
    if rewards is not None:
        charts["Token rewards"] = _reward_png(rewards, pos, neg)
    cal_parts = _calibration_tables(calibration, grm_quality) if calibration is not None else None
    if calibration is not None:
        charts["GRM quality"] = _calibration_png(calibration)

    h: list[str] = [f"<h1>{_esc(title)}</h1>"]
    md: list[str] = [f"# {_md_cell(title)}"]
    rounds_first = by_round is not None and compared is not None  # right after the methods table
    sections = (["Methods compared"] if compared is not None else []) \
        + (["Accuracy by round"] if rounds_first else []) + ["Accuracy"] + (["Accuracy by round"] if by_round is not None and not rounds_first else []) \
        + ["Data funnel"] + (["GRM quality"] if quality is not None else []) \
        + (["Token rewards"] if labelled is not None else []) + (["Training curves"] if logs else []) \
        + ["Example solutions"] + (["Raw metrics"] if stages or quality is not None else [])
    rounds_parts = (_rounds_section(by_round, r_chart, rounds, rounds_chart, out_md)
                    if by_round is not None else ("", ""))
    rounds_h = [f'<h2 id="{_anchor("Accuracy by round")}">Accuracy by round</h2>', rounds_parts[0]]
    rounds_md = ["## Accuracy by round", rounds_parts[1]]
    h.append("<p>" + " · ".join(f'<a href="#{_anchor(s)}">{_esc(s)}</a>' for s in sections) + "</p>")
    health_h, health_md = _health_section(health, checks is not None)
    h.append(health_h)
    md.append(health_md)

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

    fig_paths = {name: fig_dir / f"{name}.png" for name in [*(CHART_NAMES[c] for c in charts), *figures]}

    def chart(section: str, alt: str, caption: str) -> tuple[str, str]:
        return _chart_figure(charts[section], fig_paths[CHART_NAMES[section]], out_md, alt, caption)

    h.append('<h2 id="data-funnel">Data funnel</h2>')
    md.append("## Data funnel")
    intro = ("How many samples each stage kept, from the starting policy's two draws to the tokens the RL update "
             "trained on, and what each step left out on the way (in red) and why. The teacher rewrites the wrong "
             "samples of its draw; its verified rewrites and the correct samples train the GRM. The GRM rewrites the "
             "wrong samples of the RL draw; its verified rewrites and the correct samples get token-level rewards "
             "(the label stage), on which the RL update trains.")
    h.append(f"<p>{_esc(intro)}</p>")
    md.append(_md_text(intro))
    h += [f'<p class="verdict">{_esc(line)}</p>' for line in funnel_all.summary]
    md += [f"**{_md_text(line)}**" for line in funnel_all.summary]
    for note in funnel_notes:
        h.append(f'<p class="meta">{_esc(note)}</p>')
        md.append(f"_{_md_cell(note)}_")
    if "Data funnel" in charts:
        f_h, f_md = chart("Data funnel", "data funnel", "Each box counts what a stage kept; an arrow leads to the "
                          "next stage, red lines under a box say what left on the way in and why, a green arc is the "
                          "correct samples' direct path (they need no rewrite).")
        t_h, t_md = _funnel_tables(funnel)
        h += [f_h, t_h]
        md += [f_md, t_md]
    else:
        h.append("<p><em>No stage files given: nothing to count.</em></p>")
        md.append("_No stage files given: nothing to count._")

    if quality is not None:
        q_h, q_md = _kv_section({k: v for k, v in quality.items() if k != "calibration"}, GRM_QUALITY_KEYS)
        intro = ("The trained GRM on held-out problems: its two-step rewrites of wrong predictions against the "
                 "teacher's, and its token probabilities as a detector of the tokens the teacher changed "
                 "(a token is flagged when p_t < 0.5).")
        h += ['<h2 id="grm-quality">GRM quality</h2>', f"<p>{_esc(intro)}</p>", q_h, "<h3>Calibration of p_t</h3>"]
        md += ["## GRM quality", intro, q_md, "### Calibration of p_t"]
        if cal_parts is None:
            note = (f"{grm_quality} has no 'calibration' (written before the GRM evaluation measured it): rerun the "
                    "grm_eval stage to see how often the teacher edits a token of each p_t.")
            h.append(f"<p><em>{_esc(note)}</em></p>")
            md.append(f"_{_md_cell(note)}_")
        else:
            c_intro = ("The label stage trusts p_t: a token the GRM would keep (p_t near 1) is rewarded, one it would "
                       "change (p_t near 0) penalised. Here, per bucket of p_t, the share of the held-out tokens that "
                       "the teacher's minimal rewrite edited (deleted or substituted); a calibrated GRM lies on the "
                       "dashed line.")
            c_html, c_md, c_sentence = cal_parts
            c_fig_h, c_fig_md = chart("GRM quality", "GRM calibration",
                                      "Share of tokens the teacher's rewrite edited per p_t bucket; the numbers are "
                                      "the tokens in each bucket.")
            h += [f"<p>{_esc(c_intro)}</p>", c_fig_h] + ([f'<p class="verdict">{_esc(c_sentence)}</p>'] if c_sentence else []) \
                + [c_html]
            md += [_md_text(c_intro), c_fig_md] + ([f"**{_md_text(c_sentence)}**"] if c_sentence else []) + [c_md]

    if labelled is not None:
        h.append('<h2 id="token-rewards">Token rewards</h2>')
        md.append("## Token rewards")
        if rewards is None:
            note = f"No labelled samples: {token_rewards} has no rows."
            h.append(f"<p><em>{_esc(note)}</em></p>")
            md.append(f"_{_md_cell(note)}_")
        else:
            r_html, r_md, r_sentence = _reward_section(rewards)
            r_intro = (f"The token rewards r_t of the labelled samples: r_t = clip(p_t − 0.5) into {list(pos)} for a "
                       f"correct sample and into {list(neg)} for a wrong one, so a wrong sample's token is penalised "
                       "only where the GRM would change it (p_t < 0.5).")
            r_fig_h, r_fig_md = chart("Token rewards", "token reward distribution",
                                      "Histograms of r_t (tokens, log scale) for correct and for wrong samples, and "
                                      "the share of the RL term's reward mass Σ|r_t| on each.")
            h += [f"<p>{_esc(r_intro)}</p>", r_fig_h, f'<p class="verdict">{_esc(r_sentence)}</p>', r_html]
            md += [_md_text(r_intro), r_fig_md, f"**{_md_text(r_sentence)}**", r_md]

    if logs:
        h.append('<h2 id="training-curves">Training curves</h2>')
        md.append("## Training curves")
        for (name, (png, keys)), log_name in zip(figures.items(), logs):
            caption = (f"{log_name}: {', '.join(keys)} against the optimizer step "
                       + ("(val_accuracy, the in-training validation (a point at epoch 0 is the starting "
                          "policy), against the epoch; the star marks the best evaluation, whose weights a stage "
                          "with select: best kept) " if "val_accuracy" in keys else "")
                       + ("(val_loss, the held-out loss, against the epoch; the star marks the lowest, whose "
                          "weights were kept) " if "val_loss" in keys else "")
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

    if stages or quality is not None:
        raw = {**({"grm_quality": grm_quality} if quality is not None else {}),
               **{role: path for role, path in stage_metrics.items() if role not in DRAW_ROLES}}
        objs = {"grm_quality": quality, **stages}
        if quality is not None and calibration is not None:  # charted and tabulated above; as JSON it is unreadable
            objs["grm_quality"] = {**quality, "calibration": "the table under GRM quality, Calibration of p_t"}
        r_h, r_md = _raw_section(raw, objs, out_md)
        h += ['<h2 id="raw-metrics">Raw metrics</h2>', r_h]
        md += ["## Raw metrics", r_md]

    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            "<body>\n" + "\n".join(h) + "\n</body></html>\n")
    markdown = "\n\n".join(md) + "\n"

    pngs = {**{CHART_NAMES[c]: png for c, png in charts.items()}, **{n: png for n, (png, _) in figures.items()}}
    with atomic_path(fig_dir) as tmp:
        tmp.mkdir()
        for name, png in pngs.items():
            (tmp / f"{name}.png").write_bytes(png)
    write_text_atomic(out_md, markdown)
    write_text_atomic(out_html, page)
    log.info("report: %s, %s, %d figure(s) in %s", out_html, out_md, len(pngs), fig_dir)
    return {
        "html": str(out_html),
        "md": str(out_md),
        "figures": [str(p) for p in fig_paths.values()],
        "accuracy": {p: {s: {k: m[k] for k in EVAL_KEYS} for s, m in by.items()} for p, by in evals.items()},
        "verdict": verdicts,
        "n_labelled": labelled.num_rows if labelled is not None else None,
        "examples": shown,
    }


def _raw_section(paths: Mapping[str, PathLike], objs: Mapping[str, Mapping[str, Any]], out_md: Path) -> tuple[str, str]:
    """Every key of every JSON file, flattened: collapsed in HTML (``<details>``), links to the files in Markdown."""
    intro = ("Every key of the metrics files the sections above read, flattened (nested keys joined with dots); "
             "the files themselves are the reference.")
    parts = []
    links = []
    names = []
    for role, path in paths.items():
        t_h, _ = _kv_section(objs[role])
        name = _short(role, path) if role in STAGE_FILES else "/".join(Path(path).parts[-2:])
        names.append(name)
        parts.append(f"<h3>{_esc(name)}</h3>" + f'<p class="meta">{_esc(str(path))}</p>' + t_h)
        rel = Path(os.path.relpath(Path(path), start=out_md.parent)).as_posix()
        links.append(f"- [{_md_cell(name)}]({rel})")
    h = (f'<details id="raw-metrics-details"><summary>Every key of {len(paths)} metrics file(s): '
         f'{_esc(", ".join(names))} (click to show)</summary>'
         f"<p>{_esc(intro)}</p>" + "".join(parts) + "</details>")
    return h, "The metrics files the sections above read, every key (JSON):\n\n" + "\n".join(links)


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
