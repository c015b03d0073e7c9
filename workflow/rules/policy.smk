rule policy_bootstrap:
    input:
        train=f"{DATA}/train.parquet",
        validation=f"{DATA}/validation.parquet",  # in-training validation (policy.bootstrap.validation)
    output:
        model=directory(f"{RESULTS}/policy/sft"),
        metrics=f"{RESULTS}/train_logs/policy_sft.jsonl",
    params:
        bootstrap=canonical(config["policy"]["bootstrap"]),
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        prompt_template=lambda wildcards: TASK["prompt_template"],  # a function: "{question}" is no wildcard
        seed=config["seed"],
        checkpoint_dir=f"{RESULTS}/checkpoints/policy_sft",
    log:
        f"{LOGS}/policy_bootstrap.log",
    benchmark:
        f"{BENCH}/policy_bootstrap.tsv"
    threads: workflow.cores
    resources:
        **group_resources("train"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/policy_bootstrap.py"
