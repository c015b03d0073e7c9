"""GRM calibration (rlmec_core.calibration) against a naive twin, and its place in evaluate_grm's quality.json."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from rlmec_core.calibration import DEFAULT_BINS, calibration_table
from rlmec_core.io import write_parquet
from rlmec_core.schemas import GRM_DATA


def naive_table(probs: list[float], edited: list[bool], bins: int) -> list[dict[str, Any]]:
    """One loop per bucket, edges ``i / bins``, the last bucket closed on the right."""
    out = []
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        inside = [k for k, p in enumerate(probs) if lo <= p < hi or (i == bins - 1 and p == hi)]
        n_edit = sum(1 for k in inside if edited[k])
        out.append({"lo": lo, "hi": hi, "tokens": len(inside), "edited": n_edit,
                    "share_edited": n_edit / len(inside) if inside else None,
                    "mean_p": sum(probs[k] for k in inside) / len(inside) if inside else None})
    return out


def assert_tables_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert {k: g[k] for k in ("lo", "hi", "tokens", "edited")} == {k: w[k] for k in ("lo", "hi", "tokens", "edited")}
        for key in ("share_edited", "mean_p"):
            assert (g[key] is None) == (w[key] is None), key
            if w[key] is not None:
                assert g[key] == pytest.approx(w[key], rel=1e-12, abs=1e-15), key


@pytest.mark.parametrize("bins", [1, 3, 7, 10])
@pytest.mark.parametrize("seed", range(5))
def test_calibration_table_equals_the_naive_twin(seed: int, bins: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(0, 300)
    # edges and their float neighbours included: rounding must put them where the naive loop does (p * bins
    # would not: 0.8999999999999999 * 10 rounds to 9.0, yet lies below the edge 0.9)
    edges = [float(q) for i in range(bins + 1) for q in np.nextafter(i / bins, [-1.0, i / bins, 2.0]) if 0 <= q <= 1]
    probs = [rng.choice(edges) if rng.random() < 0.3 else rng.random() for _ in range(n)]
    edited = [rng.random() < 1 - p for p in probs]
    got = calibration_table(probs, edited, bins)
    assert_tables_equal(got, naive_table(probs, edited, bins))
    assert sum(r["tokens"] for r in got) == n and sum(r["edited"] for r in got) == sum(edited)
    assert json.loads(json.dumps(got)) == got  # JSON-ready: plain ints, floats and None


def test_calibration_buckets_by_hand() -> None:
    got = calibration_table([0.0, 0.05, 0.1, 0.5, 0.55, 0.999, 1.0], [True, True, False, True, False, False, False], 2)
    assert [(r["lo"], r["hi"], r["tokens"], r["edited"]) for r in got] == [(0.0, 0.5, 3, 2), (0.5, 1.0, 4, 1)]
    assert got[0]["share_edited"] == pytest.approx(2 / 3) and got[1]["share_edited"] == 0.25
    assert got[0]["mean_p"] == pytest.approx(0.05)
    assert [r["tokens"] for r in calibration_table([0.8999999999999999, 0.9], [False, False])][8:] == [1, 1]
    empty = calibration_table(np.zeros(0), np.zeros(0, dtype=bool))
    assert len(empty) == DEFAULT_BINS and all(r["tokens"] == 0 and r["share_edited"] is None for r in empty)


@pytest.mark.parametrize(("probs", "edited", "bins", "match"), [
    ([0.5], [True, False], 10, "one length"),
    ([[0.5]], [[True]], 10, "1-D"),
    ([1.5], [True], 10, r"\[0, 1\], got 1.5"),
    ([-0.1], [True], 10, r"\[0, 1\]"),
    ([float("nan")], [True], 10, r"\[0, 1\], got nan"),
    ([0.5], [True], 0, "bins must be an integer >= 1"),
    ([0.5], [True], 2.5, "bins"),
])
def test_calibration_rejects_bad_input(probs: Any, edited: Any, bins: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        calibration_table(probs, edited, bins)


# -- evaluate_grm writes the table: its models replaced by fakes (one character = one token) ----------------

class CharTokenizer:
    pad_token_id = 0

    def __call__(self, text: str | list[str], add_special_tokens: bool = True) -> dict[str, Any]:
        def enc(t: str) -> list[int]:
            return ([1] if add_special_tokens else []) + [ord(c) for c in t]
        return {"input_ids": [enc(t) for t in text] if isinstance(text, list) else enc(text)}

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids if i > 1)


def test_evaluate_grm_reports_calibration_of_its_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rlmec_core.stages.grm as grm_stage
    from rlmec_core.sampling import EngineSettings

    rows = []
    for i, (pred, rewrite) in enumerate([("1+1=3\nThe answer is 3", "1+1=2\nThe answer is 2"),
                                         ("2+2=5\nThe answer is 5", "2+2=4\nThe answer is 4"),
                                         ("3+3=6\nThe answer is 6", "3+3=6\nThe answer is 6")]):
        correct = pred == rewrite
        rows.append({"example_id": f"s{i}/rewrite", "split": "validation", "kind": "rewrite", "prompt": f"Q{i}:",
                     "target": rewrite, "sample_id": f"s{i}", "problem_id": f"p{i}", "question": f"Q{i}",
                     "reference_solution": rewrite, "gold_answer": rewrite[-1], "prediction": pred,
                     "prediction_correct": correct, "error_step": -1 if correct else 0, "rewrite": rewrite})
    write_parquet(pa.Table.from_pylist(rows, schema=GRM_DATA), tmp_path / "data.parquet", GRM_DATA)

    rng = np.random.default_rng(0)
    scores = {r["prediction"]: np.log(rng.uniform(0.01, 1.0, len(r["prediction"]))) for r in rows}

    def fake_score(model_dir, prompt_ids, y_ids, **kwargs):
        return [scores["".join(map(chr, ids))] for ids in y_ids], 0.0

    monkeypatch.setattr(grm_stage, "load_tokenizer", lambda *a, **k: CharTokenizer())
    monkeypatch.setattr(grm_stage, "model_context", lambda *a, **k: None)
    monkeypatch.setattr(grm_stage, "grm_two_step", lambda model, cases, *a: [
        grm_stage.GRMRewrite(0, "[0]", None, None) for _ in cases])
    monkeypatch.setattr(grm_stage, "score_model", fake_score)
    m = grm_stage.evaluate_grm("unused", tmp_path / "data.parquet", tmp_path / "quality.json", adapter_name="arith",
                               grm_cfg={"generation": {}}, engine=EngineSettings(backend="hf"))
    assert json.loads((tmp_path / "quality.json").read_text()) == m

    wrong = [r for r in rows if not r["prediction_correct"]]
    p_wrong = np.exp(np.concatenate([scores[r["prediction"]] for r in wrong]))
    edited = [a != b for r in wrong for a, b in zip(r["prediction"], r["rewrite"])]  # equal lengths: substitutions
    p_right = np.exp(scores[rows[2]["prediction"]])
    cal = m["calibration"]
    assert cal["bins"] == DEFAULT_BINS and sum(edited) == 4
    assert_tables_equal(cal["wrong_predictions"], naive_table(p_wrong.tolist(), edited, DEFAULT_BINS))
    assert_tables_equal(cal["all_predictions"], naive_table([*p_wrong.tolist(), *p_right.tolist()],
                                                            edited + [False] * len(p_right), DEFAULT_BINS))
    # the flag metrics at p_t < 0.5 are the calibration buckets below 0.5
    below = [r for r in cal["wrong_predictions"] if r["hi"] <= 0.5]
    assert m["token_flag_recall"] == pytest.approx(sum(r["edited"] for r in below) / sum(edited))
