"""The ``rlmec`` command line: every stage callable outside Snakemake.

    rlmec data synth --n 500 --seed 7 --out fresh_test.parquet
    rlmec data build --config config/config.yaml
    rlmec policy --config config/config.yaml --out results/demo/policy/sft
    rlmec sample --model DIR --data PARQUET --out samples.parquet --n 5 --temperature 0.7
    rlmec evaluate --model DIR --data PARQUET --out DIR
    rlmec teacher --samples S.parquet --problems P.parquet --tokenizer DIR --out DIR [--backend openai ...]
    rlmec grm {data,train,eval,rewrite} ... --out DIR
    rlmec label --grm DIR --policy DIR --samples S.parquet --rewrites R.parquet --out DIR
    rlmec rl --labels token_rewards.parquet --policy DIR --out DIR
    rlmec inspect PARQUET [--row N | --id ID] [--no-color]
    rlmec report --run-dir results/<run> --out DIR

``rlmec <command> --help`` documents each. Settings not given as flags come from ``--config`` (validated
against config/schema.yaml) or, without it, from the schema's defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from rlmec_core.errors import RLMECError

log = logging.getLogger("rlmec")


def _config(path: str | None) -> dict[str, Any]:
    from rlmec_core.config import default_config, load_config

    return load_config(path) if path else default_config()


def _problems_adapter(data_path: str) -> str:
    """The adapter named in a problem table's ``task`` column (all rows must agree)."""
    from rlmec_core.stages.data import load_problems

    names = {p.task for p in load_problems(data_path)}
    if len(names) != 1:
        raise RLMECError(f"{data_path}: expected one task adapter in column 'task', found {sorted(names)}")
    return names.pop()


def _card_or_config(model: str, key: str, cfg_value: Any) -> Any:
    """``key`` as the model was trained with it (its model card), else the config's value."""
    card = Path(model) / "rlmec_model.json"
    return json.loads(card.read_text()).get(key, cfg_value) if card.exists() else cfg_value


def _prompt_template(model: str, cfg_template: str | None) -> str | None:
    """The template the model was trained with (its model card), else the config's."""
    return _card_or_config(model, "prompt_template", cfg_template)


def _chat_template(model: str, cfg_chat: bool) -> bool:
    """Whether the model was trained on chat-template prompts (its model card), else the config's
    ``task.chat_template``."""
    return bool(_card_or_config(model, "chat_template", cfg_chat))


def _train_paths(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """Where a training command keeps its resumable checkpoints (``--checkpoint-dir``, else beside ``--out``)
    and its per-step log (beside ``--out``)."""
    checkpoints = Path(args.checkpoint_dir) if args.checkpoint_dir else out.parent / f".{out.name}.checkpoints"
    return {"checkpoint_dir": checkpoints, "metrics_path": out.parent / f"{out.name}.train_metrics.jsonl"}


def _validation(args: argparse.Namespace, cfg: dict[str, Any], rl: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(rl config, keyword arguments)`` of a policy update's in-training validation: on ``--validation``'s
    problems (its task adapter, the policy's prompt template) as ``rl.validation`` says; without
    ``--validation`` it is off (the last weights are saved), and the command says so on stderr."""
    if not args.validation:
        if rl["validation"]["enabled"]:
            print("no --validation split given: in-training validation (rl.validation) is off and the last weights "
                  "are saved", file=sys.stderr)
        return {**rl, "validation": {**rl["validation"], "enabled": False}}, {}
    return rl, {"validation_path": args.validation, "adapter_name": _problems_adapter(args.validation),
                "prompt_template": _prompt_template(args.policy, cfg["task"]["prompt_template"])}


def cmd_data_synth(args: argparse.Namespace) -> int:
    from rlmec_core.io import write_parquet
    from rlmec_core.schemas import PROBLEMS
    from rlmec_core.stages.data import problems_table, synthesize

    cfg = _config(args.config)
    problems = synthesize(args.n, args.seed, cfg["task"]["synth"], split=args.split, prefix=f"synth{args.seed}")
    write_parquet(problems_table(problems), args.out, PROBLEMS)
    print(f"wrote {len(problems)} problems (seed {args.seed}) to {args.out}")
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    from rlmec_core.stages.data import SPLITS, run_data

    cfg = _config(args.config)
    out_dir = Path(args.out_dir or Path("data") / cfg["task"]["name"])
    stats = run_data(cfg["task"], cfg["seed"], {s: out_dir / f"{s}.parquet" for s in SPLITS}, out_dir / "stats.json")
    print(json.dumps(stats, indent=2))
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from rlmec_core.stages.policy import bootstrap_policy

    cfg = _config(args.config)
    train = args.train or str(Path("data") / cfg["task"]["name"] / "train.parquet")
    validation = args.validation or str(Path("data") / cfg["task"]["name"] / "validation.parquet")
    out = Path(args.out)
    card = bootstrap_policy(
        train,
        out,
        adapter_name=cfg["task"]["adapter"],
        prompt_template=cfg["task"]["prompt_template"],
        chat_template=cfg["task"]["chat_template"],
        bootstrap=cfg["policy"]["bootstrap"],
        seed=cfg["seed"],
        **_train_paths(args, out),
        validation_path=validation,
    )
    print(json.dumps(card, indent=2))
    return 0


def _engine(cfg: dict[str, Any], args: argparse.Namespace):
    from rlmec_core.config import engine_settings

    engine = dict(cfg["engine"])
    if args.backend:
        engine["backend"] = args.backend
    return engine_settings(engine)


def cmd_sample(args: argparse.Namespace) -> int:
    from rlmec_core.sampling import SampleSettings
    from rlmec_core.stages.sample import sample_policy

    cfg = _config(args.config)
    settings = SampleSettings(
        n=args.n, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    summary = sample_policy(
        args.model,
        args.data,
        args.out,
        adapter_name=_problems_adapter(args.data),
        prompt_template=_prompt_template(args.model, cfg["task"]["prompt_template"]),
        chat_template=_chat_template(args.model, cfg["task"]["chat_template"]),
        settings=settings,
        engine=_engine(cfg, args),
        limit=args.limit,
    )
    print(json.dumps(summary, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rlmec_core.stages.evaluate import evaluate_policy

    cfg = _config(args.config)
    out = Path(args.out)
    metrics = evaluate_policy(
        args.model,
        args.data,
        out / "predictions.parquet",
        out / "metrics.json",
        adapter_name=_problems_adapter(args.data),
        prompt_template=_prompt_template(args.model, cfg["task"]["prompt_template"]),
        chat_template=_chat_template(args.model, cfg["task"]["chat_template"]),
        max_new_tokens=args.max_new_tokens or cfg["evaluate"]["max_new_tokens"],
        engine=_engine(cfg, args),
        seed=cfg["seed"],
        confidence=cfg["evaluate"]["confidence"],
        limit=args.limit,
    )
    print(
        f"accuracy {100 * metrics['accuracy']:.1f}% ({metrics['correct']}/{metrics['total']}), "
        f"{100 * metrics['confidence']:.0f}% CI {100 * metrics['ci_low']:.1f}-{100 * metrics['ci_high']:.1f}% "
        f"-> {out}/metrics.json"
    )
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from rlmec_core.stages.teacher import run_teacher

    cfg = _config(args.config)
    teacher = dict(cfg["teacher"])
    for key in ("backend", "model", "base_url", "api_key_env", "max_in_flight", "max_predictions"):
        value = getattr(args, key)
        if value is not None:
            teacher[key] = value
    out = Path(args.out)
    metrics = run_teacher(
        args.samples,
        args.problems,
        args.tokenizer,
        out / "rewrites.parquet",
        out / "metrics.json",
        adapter_name=_problems_adapter(args.problems),
        teacher_cfg=teacher,
        seed=cfg["seed"],
        cache_path=args.cache or out / f"cache_{teacher['backend']}.jsonl",
        trust_remote_code=cfg["engine"]["trust_remote_code"],
    )
    print(json.dumps({k: metrics[k] for k in ("statuses", "mean_edit_ratio", "mean_edit_ratio_replace_rest",
                                              "requests_sent", "cache_hits")}, indent=2))
    return 0


def cmd_grm(args: argparse.Namespace) -> int:
    from rlmec_core.stages import grm

    cfg = _config(args.config)
    g, adapter = cfg["grm"], cfg["task"]["adapter"]
    out = Path(args.out)
    if args.grm_command == "data":
        result = grm.build_grm_data(args.rewrites, out / "data.parquet", out / "data_stats.json",
                                    adapter_name=adapter, grm_cfg=g, seed=cfg["seed"])
    elif args.grm_command == "train":
        result = grm.train_grm(args.data, args.init or g["model"], out, grm_cfg=g, seed=cfg["seed"],
                               **_train_paths(args, out),
                               trust_remote_code=cfg["engine"]["trust_remote_code"])
    elif args.grm_command == "eval":
        result = grm.evaluate_grm(args.model, args.data, out / "quality.json", adapter_name=adapter, grm_cfg=g,
                                  engine=_engine(cfg, args), limit=g["eval_limit"])
    else:
        result = grm.grm_rewrite(args.model, args.samples, args.problems, out / "rewrites.parquet",
                                 out / "rewrites_metrics.json", adapter_name=adapter, grm_cfg=g,
                                 engine=_engine(cfg, args), max_edit_ratio=cfg["teacher"]["max_edit_ratio"])
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from rlmec_core.stages.label import label_samples

    cfg = _config(args.config)
    out = Path(args.out)
    engine = _engine(cfg, args)
    result = label_samples(args.grm, args.policy, args.samples, args.rewrites, out / "token_rewards.parquet",
                           out / "metrics.json", adapter_name=cfg["task"]["adapter"], grm_cfg=cfg["grm"],
                           label_cfg=cfg["label"], engine=engine, trust_remote_code=engine.trust_remote_code)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_rl(args: argparse.Namespace) -> int:
    from rlmec_core.stages.rl import rl_update

    cfg = _config(args.config)
    out = Path(args.out)
    rl, validation = _validation(args, cfg, dict(cfg["rl"]))
    result = rl_update(args.labels, args.policy, out, rl_cfg=rl, seed=cfg["seed"],
                       **_train_paths(args, out), **validation,
                       chat_template=_chat_template(args.policy, cfg["task"]["chat_template"]),
                       trust_remote_code=cfg["engine"]["trust_remote_code"])
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_sft_gold(args: argparse.Namespace) -> int:
    from rlmec_core.stages.rl import sft_gold_update

    cfg = _config(args.config)
    out = Path(args.out)
    train = dict(cfg["rl"]["train"])
    train["lr"] = args.lr if args.lr is not None else cfg["compare"]["lr"].get("sft_gold", train["lr"])
    draw = cfg["sample"]["draws"][cfg["grm"]["rewrite_draw"]]
    rl, validation = _validation(args, cfg, dict(cfg["rl"]))
    result = sft_gold_update(args.data, args.policy, out, draw=draw, adapter_name=_problems_adapter(args.data),
                             prompt_template=_prompt_template(args.policy, cfg["task"]["prompt_template"]),
                             chat_template=_chat_template(args.policy, cfg["task"]["chat_template"]),
                             train_cfg=train, seed=cfg["seed"],
                             **_train_paths(args, out),
                             trust_remote_code=cfg["engine"]["trust_remote_code"], match_labels=args.match_labels,
                             validation_cfg={"validation": rl["validation"], "select": rl["select"]},
                             validation_path=validation.get("validation_path"))
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_rft(args: argparse.Namespace) -> int:
    from rlmec_core.stages.rl import rft_update

    cfg = _config(args.config)
    out = Path(args.out)
    rl = dict(cfg["rl"])
    rl["train"] = {**rl["train"], "lr": args.lr if args.lr is not None else cfg["compare"]["lr"].get("rft", rl["train"]["lr"])}
    rl, validation = _validation(args, cfg, rl)
    result = rft_update(args.samples, args.policy, out, rl_cfg=rl, seed=cfg["seed"],
                        **_train_paths(args, out), **validation,
                        trust_remote_code=cfg["engine"]["trust_remote_code"],
                        chat_template=_chat_template(args.policy, cfg["task"]["chat_template"]),
                        batch_tokens=cfg["label"]["batch_tokens"])
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from rlmec_core.inspect import inspect_parquet

    color = sys.stdout.isatty() if args.color is None else args.color
    print(inspect_parquet(args.parquet, row=args.row, sample_id=args.id, color=color))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rlmec_core.report import build_report, find_run_inputs

    run_dir = Path(args.run_dir)
    label: dict[str, Any] = {}
    splits: list[str] = ["validation", "test"]
    if args.config:
        cfg = _config(args.config)
        label = cfg.get("label") or {}
        splits = list(cfg["evaluate"]["splits"])
    found = find_run_inputs(run_dir, splits=splits)
    for path in found.missing:
        log.warning("report: %s not found, left out", path)
    out = Path(args.out)
    result = build_report(
        eval_metrics=found.eval_metrics,
        grm_quality=found.grm_quality,
        stage_metrics=found.stage_metrics,
        train_logs=found.train_logs,
        token_rewards=found.token_rewards,
        out_html=out / "report.html",
        out_md=out / "summary.md",
        fig_dir=out / "report_figures",
        title=args.title or f"RLMEC run '{run_dir.resolve().name}'",
        n_examples=args.examples,
        seed=args.seed,
        pos_clip=label.get("pos_clip", (0.0, 0.5)),
        neg_clip=label.get("neg_clip", (-0.1, 0.0)),
        kept_weight=label.get("kept_weight"),
        checks=found.checks,
        rl_lr=((cfg.get("rl") or {}).get("train") or {}).get("lr") if args.config else None,
    )
    print(f"wrote {result['html']}, {result['md']} and {len(result['figures'])} figure(s) in {out / 'report_figures'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlmec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or synthesize problem tables")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="draw demo arithmetic problems with any seed")
    synth.add_argument("--n", type=int, required=True, help="number of problems")
    synth.add_argument("--seed", type=int, required=True, help="generator seed")
    synth.add_argument("--out", required=True, help="output Parquet path")
    synth.add_argument("--split", default="test", help="split name used in the ids (default: test)")
    synth.add_argument("--config", help="take generator knobs from this config's task.synth")
    synth.set_defaults(func=cmd_data_synth)
    build = data_sub.add_parser("build", help="write data/<task>/{train,validation,test}.parquet for a config")
    build.add_argument("--config", required=True)
    build.add_argument("--out-dir", help="default: data/<task.name>")
    build.set_defaults(func=cmd_data_build)

    pol = sub.add_parser("policy", help="build and SFT the tiny demo policy")
    pol.add_argument("--config", help="run config (default: schema defaults)")
    pol.add_argument("--train", help="training Parquet (default: data/<task.name>/train.parquet)")
    pol.add_argument("--validation", help="validation Parquet for the in-training validation (policy.bootstrap."
                     "validation; default: data/<task.name>/validation.parquet)")
    pol.add_argument("--out", required=True, help="output model directory")
    pol.add_argument("--checkpoint-dir", help="where resumable checkpoints go (default: beside --out)")
    pol.set_defaults(func=cmd_policy)

    tea = sub.add_parser("teacher", help="minimal-edit rewrites of wrong samples by a teacher (oracle or an LLM API)")
    tea.add_argument("--samples", required=True, help="samples Parquet (schema SAMPLES)")
    tea.add_argument("--problems", required=True, help="the problem table the samples answer (schema PROBLEMS)")
    tea.add_argument("--tokenizer", required=True, help="directory of the policy's tokenizer (edit distances)")
    tea.add_argument("--out", required=True, help="output directory (rewrites.parquet, metrics.json)")
    tea.add_argument("--config", help="run config whose teacher block to use (default: schema defaults)")
    tea.add_argument("--backend", choices=["oracle", "openai", "anthropic"])
    tea.add_argument("--model")
    tea.add_argument("--base-url", dest="base_url")
    tea.add_argument("--api-key-env", dest="api_key_env", help="name of the environment variable holding the key")
    tea.add_argument("--max-in-flight", dest="max_in_flight", type=int)
    tea.add_argument("--max-predictions", dest="max_predictions", type=int)
    tea.add_argument("--cache", help="response cache file (default: <out>/cache_<backend>.jsonl)")
    tea.set_defaults(func=cmd_teacher)

    grm_p = sub.add_parser("grm", help="the generative reward model: data, train, eval, rewrite")
    grm_sub = grm_p.add_subparsers(dest="grm_command", required=True)
    gd = grm_sub.add_parser("data", help="GRM examples from a teacher's rewrites.parquet")
    gd.add_argument("--rewrites", required=True)
    gt = grm_sub.add_parser("train", help="SFT of the GRM (resumable)")
    gt.add_argument("--data", required=True, help="GRM data Parquet (from `rlmec grm data`)")
    gt.add_argument("--init", help="model to start from (default: config grm.model)")
    gt.add_argument("--checkpoint-dir")
    ge = grm_sub.add_parser("eval", help="GRM quality on the held-out part of its data")
    ge.add_argument("--model", required=True)
    ge.add_argument("--data", required=True)
    gr = grm_sub.add_parser("rewrite", help="the GRM rewrites the wrong samples of a samples Parquet")
    gr.add_argument("--model", required=True)
    gr.add_argument("--samples", required=True)
    gr.add_argument("--problems", required=True)
    for p in (gd, gt, ge, gr):
        p.add_argument("--out", required=True, help="output directory (the model directory for `train`)")
        p.add_argument("--config", help="run config (default: schema defaults)")
        if p in (ge, gr):
            p.add_argument("--backend", choices=["auto", "vllm", "hf"], help="override engine.backend")
        p.set_defaults(func=cmd_grm)

    lab = sub.add_parser("label", help="token rewards, old log-probs and imitation targets (token_rewards.parquet)")
    lab.add_argument("--grm", required=True, help="trained GRM directory")
    lab.add_argument("--policy", required=True, help="the sampling policy's directory")
    lab.add_argument("--samples", required=True, help="the samples the rewrites were made from (schema SAMPLES)")
    lab.add_argument("--rewrites", required=True, help="rewrites of those samples (schema REWRITES)")
    lab.add_argument("--out", required=True, help="output directory")
    lab.add_argument("--config", help="run config (default: schema defaults)")
    lab.add_argument("--backend", choices=["auto", "vllm", "hf"], help="override engine.backend")
    lab.set_defaults(func=cmd_label)

    rlp = sub.add_parser("rl", help="the RLMEC policy update on a token_rewards.parquet (resumable)")
    rlp.add_argument("--labels", required=True, help="token_rewards.parquet from `rlmec label`")
    rlp.add_argument("--policy", required=True, help="the sampling policy's directory (the starting point)")
    rlp.add_argument("--out", required=True, help="output model directory")
    rlp.add_argument("--checkpoint-dir", help="where resumable checkpoints go (default: beside --out)")
    rlp.add_argument("--config", help="run config (default: schema defaults)")
    rlp.add_argument("--validation", help="validation split Parquet: in-training validation as rl.validation and "
                    "rl.select say (default: none, the last weights are saved)")
    rlp.set_defaults(func=cmd_rl)

    sg = sub.add_parser("sft-gold", help="the sft_gold baseline: more SFT of a policy on the gold solutions of the "
                        "rl draw's problems (resumable)")
    sg.add_argument("--data", required=True, help="problem table Parquet of sample.split (the draw's rows are used)")
    sg.add_argument("--policy", required=True, help="the starting policy's directory")
    sg.add_argument("--out", required=True, help="output model directory")
    sg.add_argument("--lr", type=float, help="peak learning rate (default: compare.lr.sft_gold, else rl.train.lr)")
    sg.add_argument("--checkpoint-dir", help="where resumable checkpoints go (default: beside --out)")
    sg.add_argument("--match-labels", help="label metrics.json of the RL update to match: take its optimizer steps")
    sg.add_argument("--config", help="run config: rl.train, sample.draws, task.prompt_template (default: schema defaults)")
    sg.add_argument("--validation", help="validation split Parquet: in-training validation as rl.validation and "
                    "rl.select say (default: none, the last weights are saved)")
    sg.set_defaults(func=cmd_sft_gold)

    rf = sub.add_parser("rft", help="one round of iterated rejection-sampling fine-tuning: SFT of a policy on its "
                        "own correct samples (resumable)")
    rf.add_argument("--samples", required=True, help="the policy's samples Parquet (schema SAMPLES)")
    rf.add_argument("--policy", required=True, help="the policy that drew them (the starting point)")
    rf.add_argument("--out", required=True, help="output model directory")
    rf.add_argument("--lr", type=float, help="peak learning rate (default: compare.lr.rft, else rl.train.lr)")
    rf.add_argument("--checkpoint-dir", help="where resumable checkpoints go (default: beside --out)")
    rf.add_argument("--config", help="run config: rl, task.chat_template, label.batch_tokens (default: schema defaults)")
    rf.add_argument("--validation", help="validation split Parquet: in-training validation as rl.validation and "
                    "rl.select say (default: none, the last weights are saved)")
    rf.set_defaults(func=cmd_rft)

    for name, func, helptext in (
        ("sample", cmd_sample, "sample solutions from a policy and judge them"),
        ("evaluate", cmd_evaluate, "greedy-decode a problem table and report accuracy with a confidence interval"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--model", required=True, help="model directory (HF save_pretrained layout)")
        p.add_argument("--data", required=True, help="problem table Parquet (schema PROBLEMS)")
        p.add_argument("--out", required=True,
                       help="output directory" if name == "evaluate" else "output Parquet (schema SAMPLES)")
        p.add_argument("--config", help="run config for engine settings and prompt template")
        p.add_argument("--backend", choices=["auto", "vllm", "hf"], help="override engine.backend")
        p.add_argument("--max-new-tokens", type=int, default=None if name == "evaluate" else 128)
        p.add_argument("--limit", type=int, help="only the first N problems")
        if name == "sample":
            p.add_argument("--n", type=int, default=5, help="samples per problem (default 5)")
            p.add_argument("--temperature", type=float, default=0.7)
            p.add_argument("--top-p", type=float, default=0.95)
            p.add_argument("--seed", type=int, default=0)
        p.set_defaults(func=func)

    ins = sub.add_parser("inspect", help="show a Parquet artefact; a token_rewards row with tokens coloured by reward")
    ins.add_argument("parquet", help="any Parquet file of the pipeline (or another)")
    which = ins.add_mutually_exclusive_group()
    which.add_argument("--row", type=int, help="0-based row to show (negative: from the end)")
    which.add_argument("--id", help="show the row with this sample_id / example_id / id")
    ins.add_argument("--color", dest="color", action="store_true", default=None, help="ANSI colours (default: on a TTY)")
    ins.add_argument("--no-color", dest="color", action="store_false", default=None, help="plain text, [token|r=-0.08] markers")
    ins.set_defaults(func=cmd_inspect)

    rep = sub.add_parser("report", help="report.html + summary.md + training curves of a run directory")
    rep.add_argument("--run-dir", required=True, help="results/<run> (the standard files found there are used)")
    rep.add_argument("--out", required=True, help="output directory (report.html, summary.md, report_figures/)")
    rep.add_argument("--config", help="run config: evaluation splits, label clip ranges and kept weight (default: validation and "
                     "test, the published clip ranges, kept weight inferred from the correct rows)")
    rep.add_argument("--title", help="report heading (default: RLMEC run '<run dir name>')")
    rep.add_argument("--examples", type=int, default=10, help="example solutions to show (default 10)")
    rep.add_argument("--seed", type=int, default=0, help="seed of the example draw (default 0)")
    rep.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (RLMECError, FileNotFoundError, ValueError) as exc:
        print(f"rlmec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # vLLM spawns workers: keep the entry point guarded
    sys.exit(main())
