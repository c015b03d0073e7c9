"""Benchmark: what the published RLMEC objective allows, each setting chosen on the validation split.

Issue 15: when RLMEC is not above more SFT on the gold solutions (``sft_gold``), try the knobs the published
objective has before calling it: the ratio form (``rl.ratio_form``: published or textbook PPO-clip), the
clip range ``rl.clip_eps``, the imitation weight ``rl.imitation_coef`` (lambda) and the reward ranges of
correct and wrong samples (``label.pos_clip`` / ``label.neg_clip``, which need the samples labelled again).
Every variant changes one setting of the run's config, trains from the run's starting policy on the run's
own samples and GRM with the run's seed, and is scored on the validation split only (greedy, the
``evaluate`` stage); the test split is never read.

Run it in the directory of a finished run (after `snakemake --cores all`; the run's config is read from
``config/config.yaml`` plus ``--configfile`` layers):

    .venv/bin/python benchmarks/bench_rlmec_variants.py                        # in the repo, results/demo
    .venv/bin/python benchmarks/bench_rlmec_variants.py --lr 1e-4 --lr 5e-4    # each variant at these lrs

Writes ``benchmarks/out/bench_rlmec_variants.json`` and prints a table (validation accuracy of the run's
``sft``, ``sft_gold`` and ``rlmec`` for reference).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (name, {dotted config key: value}); "label.*" keys relabel the samples first
VARIANTS: list[tuple[str, dict]] = [
    ("published", {}),
    ("ppo ratio", {"rl.ratio_form": "ppo"}),
    ("clip_eps 0.1", {"rl.clip_eps": 0.1}),
    ("clip_eps 0.5", {"rl.clip_eps": 0.5}),
    ("lambda 0.5", {"rl.imitation_coef": 0.5}),
    ("lambda 2", {"rl.imitation_coef": 2.0}),
    ("wrong rewards to -0.5", {"label.neg_clip": [-0.5, 0.0]}),
    ("correct rewards to +0.1", {"label.pos_clip": [0.0, 0.1]}),
]


def set_key(cfg: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[leaf] = value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", action="append", default=[], help="config layers over config/config.yaml")
    parser.add_argument("--lr", type=float, action="append", help="peak learning rates (default: rl.train.lr)")
    parser.add_argument("--variant", action="append", help="only these variant names")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "bench_rlmec_variants.json"))
    args = parser.parse_args()

    import yaml

    from rlmec_core.config import engine_settings, validate_config
    from rlmec_core.stages.evaluate import evaluate_policy
    from rlmec_core.stages.label import label_samples
    from rlmec_core.stages.rl import rl_update

    raw: dict = yaml.safe_load(Path("config/config.yaml").read_text())
    for layer in args.configfile:
        from snakemake.utils import update_config

        update_config(raw, yaml.safe_load(Path(layer).read_text()))
    base = validate_config(raw)
    run = Path("results") / base["run"]
    data = Path("data") / base["task"]["name"]
    work = run / "variants"
    engine = engine_settings(base["engine"])
    ev = base["evaluate"]
    rewrite_draw = base["grm"]["rewrite_draw"]

    def validation_accuracy(model: Path, out: Path) -> float:
        metrics = out / "metrics.json"
        if not metrics.exists():
            evaluate_policy(model, data / "validation.parquet", out / "predictions.parquet", metrics,
                            adapter_name=base["task"]["adapter"], prompt_template=base["task"]["prompt_template"],
                            max_new_tokens=ev["max_new_tokens"], engine=engine, seed=base["seed"],
                            confidence=ev["confidence"])
        return json.loads(metrics.read_text())["accuracy"]

    reference = {p: json.loads((run / "eval" / p / "validation" / "metrics.json").read_text())["accuracy"]
                 for p in ("sft", "sft_gold", "rlmec") if (run / "eval" / p / "validation" / "metrics.json").exists()}
    lrs = args.lr or [base["rl"]["train"]["lr"]]
    rows = []
    for name, changes in VARIANTS:
        if args.variant and name not in args.variant:
            continue
        cfg = copy.deepcopy(base)
        for key, value in changes.items():
            set_key(cfg, key, value)
        tag = name.replace(" ", "_").replace("+", "p").replace("-", "m")
        labels = run / "label" / "token_rewards.parquet"
        if any(k.startswith("label.") for k in changes):
            labels = work / tag / "label" / "token_rewards.parquet"
            if not labels.exists():
                label_samples(run / "grm" / "model", run / "policy" / "sft", run / "samples" / "sft" / f"{rewrite_draw}.parquet",
                              run / "grm" / "rewrites.parquet", labels, labels.with_name("metrics.json"),
                              adapter_name=base["task"]["adapter"], grm_cfg=base["grm"], label_cfg=cfg["label"],
                              engine=engine, trust_remote_code=engine.trust_remote_code)
        for lr in lrs:
            cfg["rl"]["train"]["lr"] = float(lr)
            out = work / tag / f"lr{lr:g}"
            t0 = time.monotonic()
            if not (out / "policy" / "model.safetensors").exists():
                rl_update(labels, run / "policy" / "sft", out / "policy", rl_cfg=cfg["rl"], seed=base["seed"],
                          checkpoint_dir=out / "ckpt", metrics_path=out / "train.jsonl",
                          trust_remote_code=engine.trust_remote_code)
            acc = validation_accuracy(out / "policy", out / "validation")
            rows.append({"variant": name, "changes": changes, "lr": lr, "validation": acc,
                         "seconds": round(time.monotonic() - t0, 1)})
            print(f"{name:<26} lr {lr:<8g} validation {100 * acc:5.1f}%", flush=True)
    summary = {"benchmark": "RLMEC objective variants on the validation split", "run": str(run),
               "seed": base["seed"], "reference_validation": reference, "rows": rows,
               "best": max(rows, key=lambda r: r["validation"]) if rows else None}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print("reference (validation): " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in reference.items()))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
