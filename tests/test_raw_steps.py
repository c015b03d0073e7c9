"""Steps keep the raw text (issue 16 item 5): a rewrite's kept part is a slice of the prediction itself.

A policy that separates steps with blank lines (most instruct models on GSM8K) must not see its "\\n\\n"
turned into "\\n" by the rewrite: that would be an edit with imitation weight 1.0, and the GRM would learn to
flag paragraph breaks.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlmec_core.edits import align
from rlmec_core.io import write_parquet
from rlmec_core.schemas import PROBLEMS, SAMPLES
from rlmec_core.stages.data import problems_table
from rlmec_core.tasks import get_adapter
from rlmec_core.tasks.arith import ArithSpec, generate_problems

BLANK = "  First, 3 + 4 = 7.\n\n\tThen, 7 - 2 = 5.   \n\n\nThe answer is 5\n"


def naive_spans(text: str) -> list[tuple[int, int]]:
    """The twin of ``TaskAdapter.step_spans``: scan character by character."""
    spans, i, n = [], 0, len(text)
    while i < n:
        j = text.find("\n", i)
        j = n if j == -1 else j
        line = text[i:j]
        if line.strip():
            lead = len(line) - len(line.lstrip())
            spans.append((i + lead, i + lead + len(line.strip())))
        i = j + 1
    return spans


@pytest.mark.parametrize("text", [BLANK, "", "\n\n", "one", "a\nb\r\nc", "x = 1\n\n\n  y = 2  \n"])
def test_step_spans_are_the_stripped_non_blank_lines(text):
    adapter = get_adapter("gsm8k")
    spans = adapter.step_spans(text)
    assert spans == naive_spans(text.replace("\r\n", "\n")) or "\r" in text
    assert adapter.split_steps(text) == [line.strip() for line in text.splitlines() if line.strip()]
    for (a, b), (c, _) in zip(spans, spans[1:]):
        assert a < b <= c and text[b:c].strip() == ""  # disjoint, in order; separators are blank


def test_kept_prefix_and_join_rewrite_keep_every_separator():
    adapter = get_adapter("gsm8k")
    assert adapter.kept_prefix(BLANK, 0) == "  "
    assert adapter.kept_prefix(BLANK, 1) == "  First, 3 + 4 = 7.\n\n\t"
    assert adapter.kept_prefix(BLANK, 3) == BLANK
    assert adapter.step_separator(BLANK) == "\n\n\t"
    rewrite = adapter.join_rewrite(BLANK, 1, ["Then, 7 - 3 = 4.", "The answer is 4"])
    assert rewrite == "  First, 3 + 4 = 7.\n\n\tThen, 7 - 3 = 4.\n\n\tThe answer is 4"
    assert adapter.join_rewrite("a\nb", 2, ["c"]) == "a\nb\nc"  # all kept, no trailing separator: one added
    assert adapter.join_rewrite("a\n\nb\n\n", 2, ["c"]) == "a\n\nb\n\nc"
    with pytest.raises(ValueError, match="n_steps=4"):
        adapter.kept_prefix(BLANK, 4)


def test_teacher_rewrites_of_blank_line_predictions_edit_only_the_wrong_steps(tmp_path):
    """The oracle teacher on predictions whose steps are separated by blank lines: every rewrite starts
    with the prediction's raw text up to the first wrong step, and the token alignment of prediction and
    rewrite has no edit before that step."""
    from rlmec_core.config import validate_config
    from rlmec_core.models.tiny import train_tokenizer
    from rlmec_core.stages.teacher import run_teacher

    problems = generate_problems(30, 0, ArithSpec(), split="train")
    rows = []
    for p in problems:
        lines = p.reference_solution.splitlines()
        wrong_lines = list(lines)
        eq, res = wrong_lines[1].rsplit("= ", 1)  # a miscomputed second step; the rest carries it forward
        wrong_lines[1] = f"{eq}= {int(res.rstrip('.')) + 1}" + ("." if res.endswith(".") else "")
        for k, (text, ok) in enumerate((("\n\n".join(wrong_lines), False), ("\n\n".join(lines), True))):
            rows.append({"sample_id": f"{p.id}#{k}", "problem_id": p.id, "sample_index": k,
                         "prompt": f"Question: {p.question}\nAnswer:\n", "completion": text, "token_ids": [],
                         "num_tokens": 0, "finish_reason": "stop", "pred_answer": None, "gold_answer": p.answer,
                         "correct": ok, "backend": "synthetic", "temperature": 0.7, "top_p": 0.95, "seed": 0})
    samples, problems_path, tok_dir = tmp_path / "samples.parquet", tmp_path / "problems.parquet", tmp_path / "tok"
    write_parquet(pa.Table.from_pylist(rows, schema=SAMPLES), samples, SAMPLES)
    write_parquet(problems_table(problems), problems_path, PROBLEMS)
    tok = train_tokenizer([r["completion"] for r in rows], vocab_size=320)
    tok.save_pretrained(str(tok_dir))
    cfg = validate_config({"teacher": {"backend": "oracle"}})["teacher"]
    run_teacher(samples, problems_path, tok_dir, tmp_path / "rewrites.parquet", tmp_path / "metrics.json",
                adapter_name="arith", teacher_cfg=cfg, seed=0, cache_path=tmp_path / "cache.jsonl")
    out = [r for r in pq.read_table(tmp_path / "rewrites.parquet").to_pylist() if not r["prediction_correct"]]
    assert out and all(r["status"] == "ok" and r["rewrite_correct"] for r in out)
    adapter = get_adapter("arith")
    for r in out:
        k = r["error_step"]
        prefix = adapter.kept_prefix(r["prediction"], k)
        assert k >= 1 and r["rewrite"].startswith(prefix) and prefix.endswith("\n\n")
        assert "\n\n".join(adapter.split_steps(r["rewrite"])) == r["rewrite"]  # blank lines throughout
        y = tok(r["prediction"], add_special_tokens=False)["input_ids"]
        z = tok(r["rewrite"], add_special_tokens=False)["input_ids"]
        n_prefix = len(tok(prefix, add_special_tokens=False)["input_ids"])
        assert y[: n_prefix - 1] == z[: n_prefix - 1]  # (BPE may merge the separator with the next token)
        ops = align(y, z).rewrite_ops
        assert all(op == "equal" for op in ops[: n_prefix - 1]) and ops.count("equal") < len(ops)
