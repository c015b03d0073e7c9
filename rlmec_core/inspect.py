"""Look inside any Parquet artefact from a terminal (``rlmec inspect``).

- A ``token_rewards`` file (``rlmec_core.schemas.TOKEN_REWARDS``) and a chosen row: the sample's question
  and correctness, the prediction with every token coloured by its reward ``r_t`` (ANSI; red for a
  penalised token, green for a rewarded one, brighter for a larger ``|r_t|``), the per-step reward sums
  beside each step, and the rewrite ``z`` with its edited tokens (imitation weight above the row's
  minimum) marked.
- Any other Parquet file (another schema of ``ALL_SCHEMAS`` or an unknown one): its schema, row count and
  the chosen row's fields (long values truncated).
- Without a row: the schema, the row count and the first few ids.

The plain-text markers (``color=False``) are also what ``summary.md`` of the report uses:
``[token|r=-0.08]`` around a penalised token and ``{+token+}`` around an edited rewrite token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rlmec_core.errors import DataError
from rlmec_core.io import PathLike, conform
from rlmec_core.rewards import step_reward_sums
from rlmec_core.schemas import ALL_SCHEMAS, TOKEN_REWARDS

__all__ = [
    "inspect_parquet",
    "identify_schema",
    "reward_level",
    "marked_prediction",
    "marked_rewrite",
    "edited_mask",
    "infer_kept_weight",
    "solution_steps",
    "DEFAULT_POS_CLIP",
    "DEFAULT_NEG_CLIP",
]

DEFAULT_POS_CLIP: tuple[float, float] = (0.0, 0.5)
DEFAULT_NEG_CLIP: tuple[float, float] = (-0.1, 0.0)

#: id columns tried in this order to name rows (and to look rows up by ``sample_id=``)
ID_COLUMNS = ("sample_id", "example_id", "id", "problem_id")

_RESET = "\x1b[0m"
# 256-colour foregrounds, weakest to strongest (level 1..3)
ANSI_NEG = ("\x1b[38;5;174m", "\x1b[38;5;203m", "\x1b[1;38;5;196m")
ANSI_POS = ("\x1b[38;5;108m", "\x1b[38;5;71m", "\x1b[1;38;5;46m")
ANSI_EDIT = "\x1b[1;4;38;5;214m"  # bold underlined orange: an edited rewrite token
ANSI_DIM = "\x1b[2m"
ANSI_BOLD = "\x1b[1m"

_MAX_VALUE_CHARS = 200


# --------------------------------------------------------------------------------------------------
# helpers shared with rlmec_core.report


def reward_level(
    reward: float,
    pos_clip: tuple[float, float] = DEFAULT_POS_CLIP,
    neg_clip: tuple[float, float] = DEFAULT_NEG_CLIP,
) -> float:
    """The strength of a reward in ``[0, 1]``, relative to the clip range of its sign.

    ``|r| / |neg_clip[0]|`` for a negative reward, ``r / pos_clip[1]`` for a positive one (each capped at 1;
    a degenerate range gives 1 for any non-zero reward); 0 for ``r == 0``.
    """
    r = float(reward)
    if r == 0.0 or not math.isfinite(r):
        return 0.0
    scale = abs(neg_clip[0]) if r < 0 else abs(pos_clip[1])
    if scale <= 0:
        return 1.0
    return min(1.0, abs(r) / scale)


def edited_mask(weights: Sequence[float], kept_weight: float | None = None) -> list[bool]:
    """Which rewrite tokens were edited (inserted or substituted by the minimum-edit alignment).

    With ``kept_weight`` (``label.kept_weight``): every token whose weight differs from it. Without: every
    token whose weight is strictly above the row's minimum, so a row with a single weight value (a correct
    sample, or a rewrite that changed every token) shows no edit; :func:`infer_kept_weight` tells the two
    apart from the file's correct rows.
    """
    w = [float(x) for x in weights]
    if not w:
        return []
    if kept_weight is not None:
        return [abs(x - kept_weight) > 1e-6 for x in w]
    lo = min(w)
    return [x > lo + 1e-6 for x in w]


def infer_kept_weight(correct: Sequence[bool], weights: Sequence[Sequence[float]]) -> float | None:
    """The kept-token weight of a token_rewards file: the one weight every correct row uses throughout.

    (A correct sample imitates itself with every token kept.) None when there is no correct row or the
    correct rows use more than one weight value.
    """
    values = {round(float(x), 6) for ok, ws in zip(correct, weights) if ok for x in ws}
    return values.pop() if len(values) == 1 else None


def solution_steps(text: str) -> list[str]:
    """The steps of a solution: its non-blank lines (as ``step_reward_sums`` counts them)."""
    return [line for line in text.splitlines() if line.strip()]


def _visible_ws(s: str) -> str:
    return s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _wrap_marker(token: str, inner: str) -> str:
    """Put ``inner`` (the marker text built around the token's core) inside the token's own whitespace.

    ``token = lead + core + trail``; returns ``lead + inner + trail``, so line breaks stay where they are.
    """
    core = token.strip()
    start = token.find(core) if core else 0
    lead, trail = token[:start], token[start + len(core):]
    return lead + inner + trail


def _marker_core(token: str) -> str:
    core = token.strip()
    return core if core else _visible_ws(token) or "''"


def marked_prediction(tokens: Sequence[str], rewards: Sequence[float], *, decimals: int = 2) -> str:
    """The prediction as plain text with ``[token|r=-0.08]`` around every penalised token.

    Rewards of zero or above leave the token as it is. Whitespace around a token stays outside its
    marker; a whitespace-only token is shown escaped (``[\\n|r=-0.05]``) followed by the whitespace itself.
    """
    out = []
    for tok, r in zip(tokens, rewards):
        if r < 0:
            label = f"[{_marker_core(tok)}|r={r:+.{decimals}f}]"
            out.append(_wrap_marker(tok, label) if tok.strip() else label + tok)
        else:
            out.append(tok)
    return "".join(out)


def marked_rewrite(tokens: Sequence[str], weights: Sequence[float], kept_weight: float | None = None) -> str:
    """The rewrite as plain text with ``{+token+}`` around every edited token (see :func:`edited_mask`)."""
    out = []
    for tok, edited in zip(tokens, edited_mask(weights, kept_weight)):
        if edited:
            label = "{+" + _marker_core(tok) + "+}"
            out.append(_wrap_marker(tok, label) if tok.strip() else label + tok)
        else:
            out.append(tok)
    return "".join(out)


def _ansi(token: str, code: str) -> str:
    """Colour a token, closing the colour before each line break (no colour bleeds into the margin)."""
    parts = token.split("\n")
    return "\n".join(f"{code}{p}{_RESET}" if p else p for p in parts)


def _ansi_prediction(
    tokens: Sequence[str], rewards: Sequence[float], pos_clip: tuple[float, float], neg_clip: tuple[float, float]
) -> str:
    out = []
    for tok, r in zip(tokens, rewards):
        level = reward_level(r, pos_clip, neg_clip)
        if level == 0.0:
            out.append(tok)
            continue
        palette = ANSI_NEG if r < 0 else ANSI_POS
        idx = min(len(palette) - 1, int(level * len(palette) - 1e-9))
        shown = tok if tok.strip() else _visible_ws(tok) + ("\n" if "\n" in tok else "")
        out.append(_ansi(shown, palette[idx]))
    return "".join(out)


def _ansi_rewrite(tokens: Sequence[str], weights: Sequence[float], kept_weight: float | None) -> str:
    out = []
    for tok, edited in zip(tokens, edited_mask(weights, kept_weight)):
        if edited:
            shown = tok if tok.strip() else _visible_ws(tok) + ("\n" if "\n" in tok else "")
            out.append(_ansi(shown, ANSI_EDIT))
        else:
            out.append(tok)
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# schema identification and row access


def identify_schema(schema: pa.Schema) -> str | None:
    """The name of the ``ALL_SCHEMAS`` entry a file schema matches, by column names; None when none does.

    An exact column set wins; otherwise the largest known schema whose columns are all present.
    """
    names = set(schema.names)
    for name, known in ALL_SCHEMAS.items():
        if set(known.names) == names:
            return name
    best: tuple[int, str] | None = None
    for name, known in ALL_SCHEMAS.items():
        if set(known.names) <= names and (best is None or len(known.names) > best[0]):
            best = (len(known.names), name)
    return best[1] if best else None


def _open(path: PathLike) -> pq.ParquetFile:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not a Parquet file")
    try:
        return pq.ParquetFile(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{p}: not a readable Parquet file ({exc})") from exc


def _id_column(names: Sequence[str]) -> str | None:
    for col in ID_COLUMNS:
        if col in names:
            return col
    return None


def _read_row(pf: pq.ParquetFile, path: PathLike, row: int) -> pa.Table:
    """Row ``row`` (0-based) of the file as a one-row table, reading only its row group."""
    n = pf.metadata.num_rows
    if not 0 <= row < n:
        raise DataError(f"{path}: row {row} out of range (the file has {n} row(s): 0..{n - 1})")
    start = 0
    try:
        for g in range(pf.num_row_groups):
            size = pf.metadata.row_group(g).num_rows
            if row < start + size:
                return pf.read_row_group(g).slice(row - start, 1)
            start += size
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: row {row} could not be read ({exc})") from exc
    raise DataError(f"{path}: row {row} not found in its row groups")  # pragma: no cover (metadata lies)


def _find_id(pf: pq.ParquetFile, path: PathLike, sample_id: str) -> int:
    col = _id_column(pf.schema_arrow.names)
    if col is None:
        raise DataError(f"{path}: no id column (looked for {list(ID_COLUMNS)}) to find id {sample_id!r} in")
    try:
        ids = pf.read(columns=[col]).column(col).to_pylist()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: column {col!r} could not be read ({exc})") from exc
    for i, value in enumerate(ids):
        if value == sample_id:
            return i
    raise DataError(f"{path}: id {sample_id!r} not found in column {col!r} ({len(ids)} row(s))")


def _short(value: Any, limit: int = _MAX_VALUE_CHARS) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (list, tuple)):
        items = ", ".join(_short(v, 40) for v in value[:20])
        more = f", ... ({len(value)} items)" if len(value) > 20 else ""
        text = f"[{items}{more}]"
    else:
        text = repr(value) if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _schema_lines(schema: pa.Schema, kind: str | None, n_rows: int, path: PathLike) -> list[str]:
    lines = [f"{path}: {kind + ' file' if kind else 'Parquet file (unknown schema)'}, {n_rows} row(s)", "columns:"]
    width = max((len(f.name) for f in schema), default=0)
    lines += [f"  {f.name:<{width}}  {f.type}" for f in schema]
    return lines


# --------------------------------------------------------------------------------------------------
# rendering


def _token_rewards_row(
    row: dict[str, Any],
    *,
    color: bool,
    pos_clip: tuple[float, float],
    neg_clip: tuple[float, float],
    kept_weight: float | None,
) -> list[str]:
    bold = (lambda s: f"{ANSI_BOLD}{s}{_RESET}") if color else (lambda s: s)
    dim = (lambda s: f"{ANSI_DIM}{s}{_RESET}") if color else (lambda s: s)
    tokens, rewards, probs = row["tokens"], row["rewards"], row["grm_probs"]
    verdict = "correct" if row["correct"] else "incorrect"
    error_step = row.get("error_step")
    lines = [
        f"{bold('sample')}   {row['sample_id']}  (problem {row['problem_id']})",
        f"{bold('verdict')}  {verdict}; gold answer {row['gold_answer']!r}; first error step "
        f"{error_step if error_step is not None else 'unknown'}; rewrite by {row['rewrite_source']}; "
        f"edit distance {row['edit_distance']} (ratio {row['edit_ratio']:.3f})",
        "",
        bold("question"),
        row["question"],
        "",
    ]
    n = len(tokens)
    if not (len(rewards) == len(probs) == n):
        raise DataError(f"row {row['sample_id']!r}: tokens ({n}), rewards ({len(rewards)}) and grm_probs "
                        f"({len(probs)}) differ in length")
    if n:
        total = sum(rewards)
        nonzero = sum(1 for r in rewards if r != 0)
        legend = "red = penalised, green = rewarded, brighter = larger |r_t|" if color else \
            "[token|r=...] marks a penalised token"
        lines += [
            bold(f"prediction y ({n} tokens; reward sum {total:+.3f}; {nonzero} non-zero; {legend})"),
            _ansi_prediction(tokens, rewards, pos_clip, neg_clip) if color else marked_prediction(tokens, rewards),
            "",
        ]
        sums = step_reward_sums(tokens, rewards)
        steps = solution_steps("".join(tokens))
        lines.append(bold("reward sum per step"))
        for i, (step, s) in enumerate(zip(steps, sums)):
            flag = "  <- first error step" if error_step is not None and i == error_step else ""
            lines.append(f"  [{i}] {s:+8.3f}  {step}{dim(flag) if flag else ''}")
        stored = list(row.get("step_rewards") or [])
        if len(stored) != len(sums) or any(abs(a - b) > 1e-3 for a, b in zip(stored, sums)):
            lines.append(dim(f"  (note: the file's step_rewards column holds {_short(stored)})"))
        lines.append("")
    else:
        lines += [bold("prediction y (no tokens)"), row["prediction"], ""]
    z_tokens, weights = row["imitation_tokens"], row["imitation_weights"]
    n_edit = sum(edited_mask(weights, kept_weight))
    how = "edited tokens highlighted" if color else "{+token+} marks an edited token"
    lines += [
        bold(f"rewrite z ({len(z_tokens)} tokens, {n_edit} edited; {how})"),
        _ansi_rewrite(z_tokens, weights, kept_weight) if color else marked_rewrite(z_tokens, weights, kept_weight),
    ]
    return lines


def inspect_parquet(
    path: PathLike,
    *,
    row: int | None = None,
    sample_id: str | None = None,
    color: bool = True,
    max_rows_summary: int = 5,
    pos_clip: tuple[float, float] = DEFAULT_POS_CLIP,
    neg_clip: tuple[float, float] = DEFAULT_NEG_CLIP,
) -> str:
    """A human-readable view of a Parquet artefact (see the module docstring).

    Args:
        path: the Parquet file.
        row: 0-based row to show (negative counts from the end, as in Python).
        sample_id: show the row whose id column (``sample_id``, ``example_id``, ``id`` or ``problem_id``,
            the first present) equals this; exclusive with ``row``.
        color: ANSI colours (else plain-text markers).
        max_rows_summary: how many ids the summary lists when no row is chosen.
        pos_clip, neg_clip: the label stage's clip ranges; the colour intensity of a reward is its size
            relative to these (``label.pos_clip`` / ``label.neg_clip``).

    Returns:
        The text to print (no trailing newline).

    Raises:
        DataError: the file is missing or not Parquet; ``row`` is out of range; ``sample_id`` is not found;
            a token_rewards file is malformed. The message names the file and the row or id.
        ValueError: both ``row`` and ``sample_id`` are given.
    """
    if row is not None and sample_id is not None:
        raise ValueError("give a row or an id, not both")
    pf = _open(path)
    schema = pf.schema_arrow
    n_rows = pf.metadata.num_rows
    kind = identify_schema(schema)
    lines = _schema_lines(schema, kind, n_rows, path)

    if row is None and sample_id is None:
        col = _id_column(schema.names)
        if col and n_rows:
            k = max(0, min(max_rows_summary, n_rows))
            try:
                ids = pf.read_row_group(0, columns=[col]).column(col).to_pylist()[:k] if pf.num_row_groups else []
                if len(ids) < k:
                    ids = pf.read(columns=[col]).column(col).to_pylist()[:k]
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{path}: column {col!r} could not be read ({exc})") from exc
            lines.append(f"first {len(ids)} {col}(s):")
            lines += [f"  [{i}] {v}" for i, v in enumerate(ids)]
            if kind == "token_rewards":
                lines.append("show one with --row N or --id ID")
        return "\n".join(lines)

    if sample_id is not None:
        index = _find_id(pf, path, sample_id)
    else:
        assert row is not None
        index = row + n_rows if row < 0 else row
        if not 0 <= index < n_rows:
            raise DataError(f"{path}: row {row} out of range (the file has {n_rows} row(s): 0..{n_rows - 1})")
    where = f"row {index}" + (f" (id {sample_id!r})" if sample_id is not None else "")
    table = _read_row(pf, path, index)

    if kind == "token_rewards":
        table = conform(table, TOKEN_REWARDS, where=f"{path} {where}")
        record = table.to_pylist()[0]
        weights = record["imitation_weights"]
        kept_weight = None
        if not record["correct"] and weights and len(set(weights)) == 1:
            # one weight throughout: kept everywhere or edited everywhere? the correct rows tell
            try:
                cols = pf.read(columns=["correct", "imitation_weights"])
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{path}: columns correct/imitation_weights could not be read ({exc})") from exc
            kept_weight = infer_kept_weight(cols.column("correct").to_pylist(),
                                            cols.column("imitation_weights").to_pylist())
        try:
            body = _token_rewards_row(record, color=color, pos_clip=pos_clip, neg_clip=neg_clip,
                                      kept_weight=kept_weight)
        except (DataError, ValueError) as exc:
            raise DataError(f"{path} {where}: {exc}") from exc
        return "\n".join([f"{path} {where} of {n_rows} (token_rewards)", "", *body])

    record = table.to_pylist()[0]
    lines += ["", f"{where}:"]
    width = max((len(k) for k in record), default=0)
    lines += [f"  {k:<{width}}  {_short(v)}" for k, v in record.items()]
    return "\n".join(lines)
