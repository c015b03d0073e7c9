# Iterative RLMEC (config `rounds`, docs/rounds.md). Round 1 is the one-round pipeline (its outputs stay where
# they are); round r >= 2 of a chain (a method at one seed and lr, named like its one-round run) trains from the
# chain's round r-1 policy on a fresh draw of problems (round_draw), under results/<run>/round<r>/:
#   samples/<name>.parquet              the round r-1 policy's samples (rlmec and rft chains)
#   teacher/<name>/, grm/<name>/        the GRM refresh (grm.refresh.teacher_budget): teacher rewrites of the
#                                       round's wrong samples, the GRM fine-tuned on them, its quality
#   grm/<name>/rewrites.parquet         the GRM's rewrites of the round's samples
#   label/<name>/token_rewards.parquet  their token rewards
#   policy/<name>, train_logs/<name>.jsonl, eval/<name>/<split>/   the round's policy and its evaluation
check_rounds()
ROUND = r"[2-9]|[1-9][0-9]+"
RUN_SUFFIX = rf"_lr{LR_PATTERN}_s[0-9]+"
CHAIN_NAMES = {  # the policy names of each method's chains (the default target's own runs have no suffix)
    "rlmec": rf"rlmec|rlmec{RUN_SUFFIX}",
    "rft": rf"rft{RUN_SUFFIX}",
    "grpo": rf"grpo{RUN_SUFFIX}",
    "sft_gold": rf"sft_gold|sft_gold{RUN_SUFFIX}",
}
SAMPLED_CHAINS = f"{CHAIN_NAMES['rlmec']}|{CHAIN_NAMES['rft']}"  # chains that sample their own policy


use rule sample as round_sample with:
    input:
        model=prev_policy_input,
        data=f"{DATA}/{SAMPLE['split']}.parquet",
    output:
        f"{RESULTS}/round{{r}}/samples/{{name}}.parquet",
    params:
        model=prev_policy,
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        prompt_template=lambda wildcards: TASK["prompt_template"],  # a function: "{question}" is no wildcard
        sample=canonical({k: v for k, v in SAMPLE.items() if k not in ("split", "draws")}),
        draw=lambda wc: round_draw(wc.r),
        seed=lambda wc: chain_seed(wc) + DRAW_SEEDS["rl"] + ROUND_SEED_STRIDE * (int(wc.r) - 1),
        engine=canonical(config["engine"]),
    wildcard_constraints:
        r=ROUND,
        name=SAMPLED_CHAINS,
    log:
        f"{LOGS}/round{{r}}/sample_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/sample_{{name}}.tsv"


# -- the GRM refresh (grm.refresh.teacher_budget) ------------------------------------------------------------
use rule teacher as round_teacher with:
    input:
        samples=f"{RESULTS}/round{{r}}/samples/{{name}}.parquet",
        problems=f"{DATA}/{SAMPLE['split']}.parquet",
        policy=prev_policy_input,
    output:
        rewrites=f"{RESULTS}/round{{r}}/teacher/{{name}}/rewrites.parquet",
        metrics=f"{RESULTS}/round{{r}}/teacher/{{name}}/metrics.json",
    params:
        teacher=canonical({**TEACHER, "max_predictions": REFRESH}),
        adapter=TASK["adapter"],
        seed=lambda wc: chain_seed(wc) + ROUND_SEED_STRIDE * (int(wc.r) - 1),
        tokenizer=prev_policy,
        trust_remote_code=config["engine"]["trust_remote_code"],
        cache=f"{RESULTS}/cache/teacher_{TEACHER['backend']}.jsonl",  # one cache: a reply is never paid twice
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["rlmec"],
    log:
        f"{LOGS}/round{{r}}/teacher_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/teacher_{{name}}.tsv"


use rule grm_data as round_grm_data with:
    input:
        rewrites=f"{RESULTS}/round{{r}}/teacher/{{name}}/rewrites.parquet",
    output:
        data=f"{RESULTS}/round{{r}}/grm/{{name}}/data.parquet",
        stats=f"{RESULTS}/round{{r}}/grm/{{name}}/data_stats.json",
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["rlmec"],
    log:
        f"{LOGS}/round{{r}}/grm_data_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/grm_data_{{name}}.tsv"


use rule grm_train as round_grm_train with:
    input:
        data=f"{RESULTS}/round{{r}}/grm/{{name}}/data.parquet",
        init=lambda wc: round_grm(wc.name, int(wc.r) - 1),
    output:
        model=directory(f"{RESULTS}/round{{r}}/grm/{{name}}/model"),
        metrics=f"{RESULTS}/round{{r}}/train_logs/grm_{{name}}.jsonl",
    params:
        grm=canonical({k: GRM[k] for k in ("prompts", "max_length", "train", "lora", "validation")}),
        init=lambda wc: round_grm(wc.name, int(wc.r) - 1),  # the previous round's GRM, trained further
        seed=config["seed"],
        trust_remote_code=config["engine"]["trust_remote_code"],
        checkpoint_dir=lambda wc: f"{RESULTS}/checkpoints/round{wc.r}/grm_{wc.name}",
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["rlmec"],
    log:
        f"{LOGS}/round{{r}}/grm_train_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/grm_train_{{name}}.tsv"


use rule grm_eval as round_grm_eval with:
    input:
        model=f"{RESULTS}/round{{r}}/grm/{{name}}/model",
        data=f"{RESULTS}/round{{r}}/grm/{{name}}/data.parquet",
    output:
        f"{RESULTS}/round{{r}}/grm/{{name}}/quality.json",
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["rlmec"],
    log:
        f"{LOGS}/round{{r}}/grm_eval_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/grm_eval_{{name}}.tsv"


# The round-1 GRM on the same held-out rewrites: how stale it has gone on this round's errors.
use rule grm_eval as round_grm_eval_stale with:
    input:
        model=f"{RESULTS}/grm/model",
        data=f"{RESULTS}/round{{r}}/grm/{{name}}/data.parquet",
    output:
        f"{RESULTS}/round{{r}}/grm/{{name}}/quality_stale.json",
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["rlmec"],
    log:
        f"{LOGS}/round{{r}}/grm_eval_stale_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/grm_eval_stale_{{name}}.tsv"


# -- RLMEC: the GRM rewrites and labels the round's samples; the update starts from the round r-1 policy ---
use rule grm_rewrite as round_grm_rewrite with:
    input:
        model=lambda wc: round_grm(wc.name, wc.r),
        samples=f"{RESULTS}/round{{r}}/samples/{{name}}.parquet",
        problems=f"{DATA}/{SAMPLE['split']}.parquet",
    output:
        rewrites=f"{RESULTS}/round{{r}}/grm/{{name}}/rewrites.parquet",
        metrics=f"{RESULTS}/round{{r}}/grm/{{name}}/rewrites_metrics.json",
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["rlmec"],
    log:
        f"{LOGS}/round{{r}}/grm_rewrite_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/grm_rewrite_{{name}}.tsv"


use rule label as round_label with:
    input:
        grm=lambda wc: round_grm(wc.name, wc.r),
        policy=prev_policy_input,
        rewrites=f"{RESULTS}/round{{r}}/grm/{{name}}/rewrites.parquet",
        samples=f"{RESULTS}/round{{r}}/samples/{{name}}.parquet",
    output:
        labels=f"{RESULTS}/round{{r}}/label/{{name}}/token_rewards.parquet",
        metrics=f"{RESULTS}/round{{r}}/label/{{name}}/metrics.json",
    params:
        policy=prev_policy,
        label=canonical(LABEL_PARAMS),
        grm=canonical({k: GRM[k] for k in ("prompts",)}),
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        engine=canonical(config["engine"]),
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["rlmec"],
    log:
        f"{LOGS}/round{{r}}/label_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/label_{{name}}.tsv"


# The round's pre-flight checks: its labels and the GRM that made them.
use rule preflight as round_preflight with:
    input:
        label_metrics=f"{RESULTS}/round{{r}}/label/{{name}}/metrics.json",
        **({"grm_quality": lambda wc: str(Path(round_grm(wc.name, wc.r)).parent / "quality.json")}
           if LABEL["rewrites"] == "grm" else {}),
    output:
        f"{RESULTS}/round{{r}}/checks/{{name}}/preflight.json",
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["rlmec"],
    log:
        f"{LOGS}/round{{r}}/preflight_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/preflight_{{name}}.tsv"


use rule method_rl as round_rl with:
    input:
        labels=f"{RESULTS}/round{{r}}/label/{{name}}/token_rewards.parquet",
        samples=f"{RESULTS}/round{{r}}/samples/{{name}}.parquet",
        policy=prev_policy_input,
        validation=VALIDATION_SPLIT,
        checks=f"{RESULTS}/round{{r}}/checks/{{name}}/preflight.json",
    output:
        model=directory(f"{RESULTS}/round{{r}}/policy/{{name}}"),
        metrics=f"{RESULTS}/round{{r}}/train_logs/{{name}}.jsonl",
    params:
        policy=prev_policy,
        rl=round_rl_cfg,
        method="rlmec",
        instance_rewards=COMPARE["instance_rewards"],
        dpo_beta=COMPARE["dpo_beta"],
        chat_template=TASK["chat_template"],
        adapter=TASK["adapter"],
        prompt_template=lambda wildcards: TASK["prompt_template"],
        seed=chain_seed,
        trust_remote_code=config["engine"]["trust_remote_code"],
        checkpoint_dir=lambda wc: f"{RESULTS}/checkpoints/round{wc.r}/{wc.name}",
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["rlmec"],
    log:
        f"{LOGS}/round{{r}}/rl_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/rl_{{name}}.tsv"


# -- the same-budget baselines --------------------------------------------------------------------------------
# Iterated rejection-sampling fine-tuning (expert iteration): the round r-1 policy's correct samples of the
# round's draw (its round 1 is the comparison's `rft` run on the starting policy's draw).
rule round_rft:
    input:
        samples=f"{RESULTS}/round{{r}}/samples/{{name}}.parquet",
        policy=prev_policy_input,
        validation=VALIDATION_SPLIT,
    output:
        model=directory(f"{RESULTS}/round{{r}}/policy/{{name}}"),
        metrics=f"{RESULTS}/round{{r}}/train_logs/{{name}}.jsonl",
    params:
        policy=prev_policy,
        rl=round_rl_cfg,
        chat_template=TASK["chat_template"],
        adapter=TASK["adapter"],
        prompt_template=lambda wildcards: TASK["prompt_template"],
        batch_tokens=LABEL["batch_tokens"],
        seed=chain_seed,
        trust_remote_code=config["engine"]["trust_remote_code"],
        checkpoint_dir=lambda wc: f"{RESULTS}/checkpoints/round{wc.r}/{wc.name}",
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["rft"],
    log:
        f"{LOGS}/round{{r}}/rft_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/rft_{{name}}.tsv"
    threads: workflow.cores
    resources:
        **group_resources("train"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/rft.py"


# GRPO through TRL on the round's problems with sample.n completions each: as many policy samples as RLMEC.
use rule method_grpo as round_grpo with:
    input:
        data=f"{DATA}/{SAMPLE['split']}.parquet",
        policy=prev_policy_input,
        validation=VALIDATION_SPLIT,
    output:
        model=directory(f"{RESULTS}/round{{r}}/policy/{{name}}"),
        metrics=f"{RESULTS}/round{{r}}/train_logs/{{name}}.jsonl",
    params:
        policy=prev_policy,
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        prompt_template=lambda wildcards: TASK["prompt_template"],  # a function: "{question}" is no wildcard
        draw=lambda wc: round_draw(wc.r),
        sample=canonical({k: v for k, v in SAMPLE.items() if k not in ("split", "draws")}),
        grpo=lambda wc: canonical({**COMPARE["grpo"], "lr": parse_run(wc.name)[1]}),
        validation=canonical(RL_VALIDATION),
        seed=lambda wc: chain_seed(wc) + ROUND_SEED_STRIDE * (int(wc.r) - 1),
        trust_remote_code=config["engine"]["trust_remote_code"],
        checkpoint_dir=lambda wc: f"{RESULTS}/checkpoints/round{wc.r}/{wc.name}",
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["grpo"],
    log:
        f"{LOGS}/round{{r}}/grpo_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/grpo_{{name}}.tsv"


# More SFT on the gold solutions of the round's problems, with the optimizer steps of the same seed's RLMEC round.
use rule sft_gold as round_sft_gold with:
    input:
        data=f"{DATA}/{SAMPLE['split']}.parquet",
        policy=prev_policy_input,
        match_labels=lambda wc: round_labels(matched_rlmec(wc.name), wc.r, "metrics.json"),
        validation=VALIDATION_SPLIT,
    output:
        model=directory(f"{RESULTS}/round{{r}}/policy/{{name}}"),
        metrics=f"{RESULTS}/round{{r}}/train_logs/{{name}}.jsonl",
    params:
        policy=prev_policy,
        draw=lambda wc: round_draw(wc.r),
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        prompt_template=lambda wildcards: TASK["prompt_template"],  # a function: "{question}" is no wildcard
        train=lambda wc: round_rl_cfg(wc)["train"],
        validation=canonical(RL_VALIDATION),
        seed=chain_seed,
        trust_remote_code=config["engine"]["trust_remote_code"],
        checkpoint_dir=lambda wc: f"{RESULTS}/checkpoints/round{wc.r}/{wc.name}",
    wildcard_constraints:
        r=ROUND,
        name=CHAIN_NAMES["sft_gold"],
    log:
        f"{LOGS}/round{{r}}/sft_gold_{{name}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/sft_gold_{{name}}.tsv"


use rule evaluate as round_evaluate with:
    input:
        model=lambda wc: round_policy(wc.name, wc.r),
        data=f"{DATA}/{{split}}.parquet",
    output:
        predictions=f"{RESULTS}/round{{r}}/eval/{{name}}/{{split}}/predictions.parquet",
        metrics=f"{RESULTS}/round{{r}}/eval/{{name}}/{{split}}/metrics.json",
    params:
        model=lambda wc: round_policy(wc.name, wc.r),
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        prompt_template=lambda wildcards: TASK["prompt_template"],  # a function: "{question}" is no wildcard
        engine=canonical(config["engine"]),
        evaluate=canonical({k: v for k, v in config["evaluate"].items() if k != "splits"}),
        seed=config["seed"],
    wildcard_constraints:
        r=ROUND,
    log:
        f"{LOGS}/round{{r}}/evaluate_{{name}}_{{split}}.log",
    benchmark:
        f"{BENCH}/round{{r}}/evaluate_{{name}}_{{split}}.tsv"


# -- accuracy by round: the default target's chains (rlmec, sft_gold) and the comparison's -----------------
rule rounds_table:
    input:
        rounds_inputs(DEFAULT_CHAINS),
    output:
        table=f"{RESULTS}/rounds/table.md",
        data=f"{RESULTS}/rounds/table.json",
        chart=f"{RESULTS}/rounds/accuracy_by_round.png",
    params:
        chains=rounds_params(DEFAULT_CHAINS),
        grm_quality=rounds_grm_quality(DEFAULT_CHAINS),
        splits=config["evaluate"]["splits"],
    log:
        f"{LOGS}/rounds_table.log",
    benchmark:
        f"{BENCH}/rounds_table.tsv"
    resources:
        **group_resources("cpu"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/rounds.py"


COMPARE_CHAINS = round_chains(COMPARE["rounds"]["methods"], COMPARE["seeds"])


use rule rounds_table as compare_rounds with:
    input:
        rounds_inputs(COMPARE_CHAINS),
    output:
        table=f"{RESULTS}/compare/rounds.md",
        data=f"{RESULTS}/compare/rounds.json",
        chart=report(f"{RESULTS}/compare/accuracy_by_round.png", caption="../report/rounds.rst", category="Comparison"),
    params:
        chains=rounds_params(COMPARE_CHAINS),
        grm_quality=rounds_grm_quality(COMPARE_CHAINS),
        splits=config["evaluate"]["splits"],
    log:
        f"{LOGS}/compare_rounds.log",
    benchmark:
        f"{BENCH}/compare_rounds.tsv"
