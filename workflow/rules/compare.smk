# Baselines and ablations (rlmec_core/methods.py) on the same labelled samples: `snakemake --cores all compare`.
use rule label as label_teacher with:
    input:
        grm=f"{RESULTS}/grm/model",
        policy=policy_requirement("sft"),
        rewrites=f"{RESULTS}/teacher/rewrites.parquet",
        samples=f"{RESULTS}/samples/sft/teacher.parquet",
    output:
        labels=f"{RESULTS}/label/teacher/token_rewards.parquet",
        metrics=f"{RESULTS}/label/teacher/metrics.json",
    log:
        f"{LOGS}/label_teacher.log",
    benchmark:
        f"{BENCH}/label_teacher.tsv"


rule method_rl:
    input:
        labels=lambda wc: METHOD_LABELS.get(wc.method, f"{RESULTS}/label/token_rewards.parquet"),
        samples=f"{RESULTS}/samples/sft/{GRM['rewrite_draw']}.parquet",  # the draw the labels come from (DPO's pairs)
        policy=policy_requirement("sft"),
        validation=VALIDATION_SPLIT,
        # the labels' pre-flight checks (those of the teacher-made labels of rlmec_teacher_rewrites too: the GRM
        # and the default labels are the run's, and a run whose checks fail compares nothing)
        checks=f"{RESULTS}/checks/preflight.json",
    output:
        model=directory(f"{RESULTS}/policy/{{method}}_lr{{lr}}_s{{seed}}"),
        metrics=f"{RESULTS}/train_logs/{{method}}_lr{{lr}}_s{{seed}}.jsonl",
    params:
        policy=lambda wc: policy_dir("sft"),
        rl=lambda wc: rl_with_lr(wc.lr),
        method=lambda wc: wc.method,
        instance_rewards=COMPARE["instance_rewards"],
        dpo_beta=COMPARE["dpo_beta"],
        chat_template=TASK["chat_template"],  # DPO encodes the samples' prompts itself
        adapter=TASK["adapter"],
        prompt_template=lambda wildcards: TASK["prompt_template"],
        seed=lambda wc: int(wc.seed),
        trust_remote_code=config["engine"]["trust_remote_code"],
        checkpoint_dir=lambda wc: f"{RESULTS}/checkpoints/{wc.method}_lr{wc.lr}_s{wc.seed}",
    wildcard_constraints:
        method="|".join(TRAINED_METHODS),
        lr=LR_PATTERN,
        seed=r"\d+",
    log:
        f"{LOGS}/method_rl/{{method}}_lr{{lr}}_s{{seed}}.log",
    benchmark:
        f"{BENCH}/method_rl/{{method}}_lr{{lr}}_s{{seed}}.tsv"
    threads: workflow.cores
    resources:
        **group_resources("train"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/rl.py"


rule method_grpo:
    input:
        data=f"{DATA}/{SAMPLE['split']}.parquet",
        policy=policy_requirement("sft"),
        validation=VALIDATION_SPLIT,
    output:
        model=directory(f"{RESULTS}/policy/grpo_lr{{lr}}_s{{seed}}"),
        metrics=f"{RESULTS}/train_logs/grpo_lr{{lr}}_s{{seed}}.jsonl",
    params:
        policy=lambda wc: policy_dir("sft"),
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        prompt_template=lambda wildcards: TASK["prompt_template"],  # a function: "{question}" is no wildcard
        draw=canonical(SAMPLE["draws"]["rl"]),
        sample=canonical({k: v for k, v in SAMPLE.items() if k not in ("split", "draws")}),
        grpo=lambda wc: canonical({**COMPARE["grpo"], "lr": float(wc.lr)}),
        validation=canonical(RL_VALIDATION),
        seed=lambda wc: int(wc.seed),
        trust_remote_code=config["engine"]["trust_remote_code"],
        checkpoint_dir=lambda wc: f"{RESULTS}/checkpoints/grpo_lr{wc.lr}_s{wc.seed}",
    wildcard_constraints:
        lr=LR_PATTERN,
        seed=r"\d+",
    log:
        f"{LOGS}/method_grpo/grpo_lr{{lr}}_s{{seed}}.log",
    benchmark:
        f"{BENCH}/method_grpo/grpo_lr{{lr}}_s{{seed}}.tsv"
    threads: workflow.cores
    resources:
        **group_resources("train"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/grpo.py"


rule compare_table:
    input:
        metrics=[path for run in compare_run_files() for path in run["metrics"].values()],
        predictions=[run["predictions"] for run in compare_run_files()],
        models=[policy_dir(p) for _, _, p in compare_runs() if p != "sft"],
        test=f"{DATA}/test.parquet",
        sweep=[f"{RESULTS}/compare/sweep.json"] if COMPARE["sweep"]["methods"] else [],
    output:
        table=f"{RESULTS}/compare/table.md",
        data=f"{RESULTS}/compare/table.json",
        chart=report(f"{RESULTS}/compare/accuracy.png", caption="../report/compare.rst", category="Comparison"),
    params:
        runs=compare_run_files(),
        adapter=TASK["adapter"],
        rl=canonical(config["rl"]),
        synth=canonical(TASK["synth"]) if TASK["adapter"] == "arith" else {},  # test accuracy per kind of problem
    log:
        f"{LOGS}/compare.log",
    benchmark:
        f"{BENCH}/compare.tsv"
    resources:
        **group_resources("cpu"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/compare.py"


# The learning-rate sweep on the validation split (compare.sweep): one seed, every listed lr.
rule compare_sweep:
    input:
        metrics=[f"{RESULTS}/eval/{p}/validation/metrics.json" for _, _, p in sweep_runs()],
        models=[policy_dir(p) for _, _, p in sweep_runs()],
    output:
        table=f"{RESULTS}/compare/sweep.md",
        data=f"{RESULTS}/compare/sweep.json",
    params:
        runs=[{"method": m, "lr": lr, "policy": p, "model": policy_dir(p),
               "metrics": f"{RESULTS}/eval/{p}/validation/metrics.json"} for m, lr, p in sweep_runs()],
        in_use=lambda wildcards: {m: method_lr(m) for m in COMPARE["sweep"]["methods"]},
        seed=COMPARE["sweep"]["seed"],
    log:
        f"{LOGS}/compare_sweep.log",
    benchmark:
        f"{BENCH}/compare_sweep.tsv"
    resources:
        **group_resources("cpu"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/compare_sweep.py"


# The run report with the comparison as its main table (the default target's report.html stays single-run),
# and with rounds > 1 the comparison by round.
use rule report as report_compare with:
    input:
        **{k: v for k, v in rules.report.input.items() if k not in ("rounds", "rounds_chart")},
        comparison=f"{RESULTS}/compare/table.json",
        comparison_chart=f"{RESULTS}/compare/accuracy.png",
        **({"rounds": f"{RESULTS}/compare/rounds.json", "rounds_chart": f"{RESULTS}/compare/accuracy_by_round.png"}
           if ROUNDS > 1 else {}),
    output:
        html=report(f"{RESULTS}/compare/report.html", caption="../report/report.rst", category="Comparison"),
        md=f"{RESULTS}/compare/summary.md",
        figures=directory(f"{RESULTS}/compare/report_figures"),
    params:
        title=f"RLMEC run '{RUN}': methods compared",
        n_examples=10,
        seed=config["seed"],
        label=canonical({k: config["label"][k] for k in ("pos_clip", "neg_clip", "kept_weight")}),
        rl_lr=config["rl"]["train"]["lr"],
    log:
        f"{LOGS}/report_compare.log",
    benchmark:
        f"{BENCH}/report_compare.tsv"


# `snakemake --cores all compare`: every method over every seed, the table, its chart and the report
# (with rounds > 1 also every round of compare.rounds.methods: compare/rounds.md).
rule compare:
    input:
        rules.compare_table.output,
        rules.report_compare.output,
        [f"{RESULTS}/compare/rounds.md"] if ROUNDS > 1 else [],
    localrule: True
