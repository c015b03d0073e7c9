RL = config["rl"]


# The pre-flight checks (rlmec_core.preflight) between the label stage and every update that trains on its labels:
# the labels and, when the GRM made them, the GRM's held-out quality. A red stopping check fails the job with the
# figures and the config keys to change (its file is then removed with the failed job), so nothing trains on the
# labels. The thresholds are read from the config, not params: changing one does not redo a finished run (a
# stopped one reruns anyway).
rule preflight:
    input:
        label_metrics=f"{RESULTS}/label/metrics.json",
        # the GRM's quality, when the GRM made the labels (the teacher-rewrite ablation has none to check)
        **({"grm_quality": f"{RESULTS}/grm/quality.json"} if LABEL["rewrites"] == "grm" else {}),
    output:
        f"{RESULTS}/checks/preflight.json",
    log:
        f"{LOGS}/preflight.log",
    benchmark:
        f"{BENCH}/preflight.tsv"
    resources:
        **group_resources("cpu"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/preflight.py"


# The RLMEC update, from the starting policy, with in-training validation (rl.validation, rl.select).
rule rl:
    input:
        labels=f"{RESULTS}/label/token_rewards.parquet",
        checks=f"{RESULTS}/checks/preflight.json",  # passed: the labels are worth training on
        policy=policy_requirement("sft"),
        validation=VALIDATION_SPLIT,  # rl.validation
    output:
        model=directory(f"{RESULTS}/policy/rlmec"),
        metrics=f"{RESULTS}/train_logs/rl.jsonl",
    params:
        policy=lambda wc: policy_dir("sft"),
        rl=canonical(RL),
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        prompt_template=lambda wildcards: TASK["prompt_template"],  # a function: "{question}" is no wildcard
        seed=config["seed"],
        trust_remote_code=config["engine"]["trust_remote_code"],
        checkpoint_dir=lambda wc: f"{RESULTS}/checkpoints/rl",
    log:
        f"{LOGS}/rl.log",
    benchmark:
        f"{BENCH}/rl.tsv"
    threads: workflow.cores
    resources:
        **group_resources("train"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/rl.py"


# The strongest simple baseline, in the default target: more SFT of the starting policy on the gold reference
# solutions of the problems the RL draw covers, with rl.train's optimizer and batch, the optimizer steps of the
# RL update (rl.train.epochs over the labelled samples, the gold solutions cycled) and the learning rate chosen
# on the validation split (compare.lr.sft_gold). `policy/sft_gold` is the run of the config's seed
# at that lr; the comparison's other seeds and the sweep's lrs are `policy/sft_gold_lr<lr>_s<seed>`.
# (the runs' lr, seed and name: sft_gold_run in common.smk)
rule sft_gold:
    input:
        data=f"{DATA}/{SAMPLE['split']}.parquet",
        policy=policy_requirement("sft"),
        match_labels=f"{RESULTS}/label/metrics.json",  # as many optimizer steps as the RL update on these labels
        validation=VALIDATION_SPLIT,
    output:
        model=directory(f"{RESULTS}/policy/sft_gold"),
        metrics=f"{RESULTS}/train_logs/sft_gold.jsonl",
    params:
        policy=lambda wc: policy_dir("sft"),
        draw=canonical(SAMPLE["draws"][GRM["rewrite_draw"]]),
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        prompt_template=lambda wildcards: TASK["prompt_template"],  # a function: "{question}" is no wildcard
        train=lambda wc: rl_with_lr(sft_gold_run(wc)[0])["train"],
        validation=canonical(RL_VALIDATION),
        seed=lambda wc: sft_gold_run(wc)[1],
        trust_remote_code=config["engine"]["trust_remote_code"],
        checkpoint_dir=lambda wc: f"{RESULTS}/checkpoints/{sft_gold_run(wc)[2]}",
    log:
        f"{LOGS}/sft_gold.log",
    benchmark:
        f"{BENCH}/sft_gold.tsv"
    threads: workflow.cores
    resources:
        **group_resources("train"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/sft_gold.py"


use rule sft_gold as method_sft_gold with:
    output:
        model=directory(f"{RESULTS}/policy/sft_gold_lr{{lr}}_s{{seed}}"),
        metrics=f"{RESULTS}/train_logs/sft_gold_lr{{lr}}_s{{seed}}.jsonl",
    wildcard_constraints:
        lr=LR_PATTERN,
        seed=r"\d+",
    log:
        f"{LOGS}/method_rl/sft_gold_lr{{lr}}_s{{seed}}.log",
    benchmark:
        f"{BENCH}/method_rl/sft_gold_lr{{lr}}_s{{seed}}.tsv"
