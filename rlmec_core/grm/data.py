"""GRM training data from the teacher's rewrites (RLMEC.md stage 3).

Every wrong prediction whose rewrite is ``ok`` gives two examples (error step, rewrite); correct
predictions give rewrite examples whose target is the prediction unchanged, subsampled (seeded) to as
many as there are wrong ones in the same split, as in the published recipe. A ``validation`` part is held
out by problem, so that no problem appears in both parts.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pyarrow as pa

from rlmec_core.errors import DataError
from rlmec_core.grm.prompts import GRMPrompts
from rlmec_core.schemas import GRM_DATA
from rlmec_core.tasks import TaskAdapter


def split_problems(problem_ids: list[str], validation_fraction: float, seed: int) -> set[str]:
    """The problems held out for validation: a seeded ``validation_fraction`` of the distinct ids."""
    distinct = sorted(set(problem_ids))
    random.Random(seed).shuffle(distinct)
    n_val = int(round(validation_fraction * len(distinct)))
    if validation_fraction > 0 and len(distinct) > 1:
        n_val = min(max(n_val, 1), len(distinct) - 1)
    return set(distinct[:n_val])


def build_examples(
    rewrites: pa.Table,
    adapter: TaskAdapter,
    prompts: GRMPrompts,
    *,
    validation_fraction: float,
    balance_correct: bool,
    seed: int,
    where: str,
) -> pa.Table:
    """The ``GRM_DATA`` table for a ``REWRITES`` table (see the module docstring).

    Raises ``DataError`` naming ``where`` when no row is usable (none wrong with an ``ok`` rewrite).
    """
    rows = rewrites.to_pylist()
    wrong = [r for r in rows if not r["prediction_correct"] and r["status"] == "ok"]
    right = [r for r in rows if r["prediction_correct"]]
    if not wrong:
        statuses = Counter(r["status"] for r in rows if not r["prediction_correct"])
        raise DataError(
            f"{where}: {len(rows)} rows ({len(right)} correct predictions, "
            f"{sum(statuses.values())} wrong ones with statuses {dict(statuses) or 'none'}); none is usable: "
            f"the GRM needs wrong predictions with an 'ok' rewrite"
        )
    held_out = split_problems([r["problem_id"] for r in rows], validation_fraction, seed)
    part = {r["sample_id"]: ("validation" if r["problem_id"] in held_out else "train") for r in rows}

    if balance_correct:
        rng = random.Random(seed + 1)
        kept_right = []
        for split in ("train", "validation"):
            pool = [r for r in right if part[r["sample_id"]] == split]
            quota = sum(1 for r in wrong if part[r["sample_id"]] == split)
            kept_right += rng.sample(pool, min(quota, len(pool)))
        order = {r["sample_id"]: i for i, r in enumerate(right)}
        right = sorted(kept_right, key=lambda r: order[r["sample_id"]])

    out: list[dict[str, Any]] = []
    for r in [*wrong, *right]:
        pred = adapter.split_steps(r["prediction"])
        ref = adapter.split_steps(r["reference_solution"])
        common = {
            "split": part[r["sample_id"]],
            "sample_id": r["sample_id"],
            "problem_id": r["problem_id"],
            "question": r["question"],
            "reference_solution": r["reference_solution"],
            "gold_answer": r["gold_answer"],
            "prediction": r["prediction"],
            "prediction_correct": r["prediction_correct"],
            "error_step": r["error_step"],
            "rewrite": r["rewrite"],
        }
        if not r["prediction_correct"]:
            out.append({**common, "example_id": f"{r['sample_id']}/error_step", "kind": "error_step",
                        "prompt": prompts.error_step_prompt(r["question"], ref, pred),
                        "target": prompts.error_step_target(r["error_step"])})
        out.append({**common, "example_id": f"{r['sample_id']}/rewrite", "kind": "rewrite",
                    "prompt": prompts.rewrite_prompt(r["question"], ref, pred), "target": r["rewrite"]})
    return pa.Table.from_pylist(out, schema=GRM_DATA)
