RL = config["rl"]


rule rl:
    input:
        labels=f"{RESULTS}/label/token_rewards.parquet",
        policy=policy_requirement("sft"),
    output:
        model=directory(f"{RESULTS}/policy/rlmec"),
        metrics=f"{RESULTS}/train_logs/rl.jsonl",
    params:
        policy=lambda wc: policy_dir("sft"),
        rl=canonical(RL),
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
