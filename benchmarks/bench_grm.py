"""The GRM's figures for issue 5, read from a finished run (e.g. `snakemake --cores all` on the demo).

- quality on the held-out problems (`grm/quality.json`, written by the `grm_eval` stage): first-error
  step accuracy (goal >= 80%), rewrite exact match / answer-correctness / edit ratio, token-flag
  precision, recall, F1 (goal >= 0.7) and the share of correct samples' tokens flagged;
- SFT throughput (tokens/s) and wall time (the model card and the rule's benchmark file);
- a diagnostic: first-error accuracy by the kind of the prediction's first mistake (a miscopied operand
  or operator vs a miscomputed result), recomputed here by greedy decoding of the held-out examples.

    .venv/bin/python benchmarks/bench_grm.py [--run results/demo]

Writes ``benchmarks/out/bench_grm.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlmec_core.io import read_parquet  # noqa: E402
from rlmec_core.sampling import EngineSettings, SampleSettings, generate  # noqa: E402
from rlmec_core.schemas import GRM_DATA  # noqa: E402
from rlmec_core.tasks import get_adapter  # noqa: E402
from rlmec_core.tasks.arith import parse_question, read_step_line, solve  # noqa: E402
from rlmec_core.teacher.protocol import parse_error_step  # noqa: E402


def mistake_kind(question: str, prediction: list[str], k: int) -> str:
    """What is wrong in line ``k`` of a demo prediction (its first wrong step)."""
    truth = solve(*parse_question(question))
    if k >= len(prediction):
        return "stops early"
    if k >= len(truth):
        return "answer line"
    eq = read_step_line(prediction[k]).equation
    if eq is None:
        return "no equation"
    step = truth[k]
    if (eq[0], eq[1], eq[2]) == (step.left, step.op, step.operand) or (
        eq[1] in "+*" and (eq[2], eq[1], eq[0]) == (step.left, step.op, step.operand)
    ):
        return "miscomputed result"
    return "miscopied operand or operator"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "results" / "demo"))
    parser.add_argument("--limit", type=int, default=500)
    args = parser.parse_args()
    run = Path(args.run)
    quality = json.loads((run / "grm" / "quality.json").read_text())
    card = json.loads((run / "grm" / "model" / "rlmec_model.json").read_text())
    with (run / "benchmarks" / "grm_train.tsv").open() as fh:
        bench = next(csv.DictReader(fh, delimiter="\t"))

    rows = [r for r in read_parquet(run / "grm" / "data.parquet", GRM_DATA).to_pylist()
            if r["split"] == "validation" and r["kind"] == "error_step"][: args.limit]
    adapter = get_adapter("arith")
    gen = generate(run / "grm" / "model", [r["prompt"] for r in rows], SampleSettings(max_new_tokens=16),
                   EngineSettings(backend="hf"))
    total, hits = Counter(), Counter()
    for r, comps in zip(rows, gen.completions, strict=True):
        pred = adapter.split_steps(r["prediction"])
        kind = mistake_kind(r["question"], pred, r["error_step"])
        total[kind] += 1
        hits[kind] += parse_error_step(comps[0].text, len(pred)) == r["error_step"]
    by_kind = {k: {"examples": n, "accuracy": hits[k] / n} for k, n in total.most_common()}

    out = {
        "quality": quality,
        "sft": {"examples": card["train_examples"], "steps": card["steps"], "tokens": card["tokens_seen"],
                "tokens_per_s": card["tokens_per_s"], "train_seconds": card["wall_seconds"],
                "rule_seconds": float(bench["s"]), "epochs": card["train"]["epochs"]},
        "error_step_accuracy_by_mistake": by_kind,
    }
    path = ROOT / "benchmarks" / "out" / "bench_grm.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    q = quality
    print(f"GRM quality ({q['validation_wrong']} held-out wrong, {q['validation_correct']} correct predictions): "
          f"first-error accuracy {100 * q['error_step_accuracy']:.1f}% (goal >= 80%); token flags P "
          f"{q['token_flag_precision']:.3f} R {q['token_flag_recall']:.3f} F1 {q['token_flag_f1']:.3f} (goal >= 0.7), "
          f"recall on the first wrong step's tokens {q['token_flag_recall_first_error_step']:.3f}; correct tokens "
          f"flagged {100 * q['correct_tokens_flagged']:.1f}%; rewrites: exact {100 * q['rewrite_exact_match']:.1f}%, "
          f"answer-correct {100 * q['rewrite_answer_correct']:.1f}%, edit ratio {q['rewrite_mean_edit_ratio']:.3f}")
    print(f"GRM SFT: {card['train_examples']} examples x {card['train']['epochs']} epochs, {card['tokens_seen']:,} tokens in "
          f"{card['wall_seconds']:.0f} s = {card['tokens_per_s']:,.0f} tokens/s (rule wall time {float(bench['s']):.0f} s)")
    for kind, v in by_kind.items():
        print(f"  first-error accuracy when the first mistake is a {kind}: {100 * v['accuracy']:.1f}% "
              f"({v['examples']} examples)")
    print(f"-> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
