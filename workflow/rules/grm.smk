GRM = config["grm"]


rule grm_data:
    input:
        rewrites=f"{RESULTS}/teacher/rewrites.parquet",
    output:
        data=f"{RESULTS}/grm/data.parquet",
        stats=f"{RESULTS}/grm/data_stats.json",
    params:
        grm=canonical({k: GRM[k] for k in ("prompts", "validation_fraction", "balance_correct")}),
        adapter=TASK["adapter"],
        seed=config["seed"],
    log:
        f"{LOGS}/grm_data.log",
    benchmark:
        f"{BENCH}/grm_data.tsv"
    resources:
        **group_resources("cpu"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/grm_data.py"


rule grm_train:
    input:
        data=f"{RESULTS}/grm/data.parquet",
        init=[] if GRM["model"] else policy_requirement("sft"),
    output:
        model=directory(f"{RESULTS}/grm/model"),
        metrics=f"{RESULTS}/train_logs/grm.jsonl",
    params:
        grm=canonical({k: GRM[k] for k in ("prompts", "max_length", "train", "lora", "validation")}),
        init=lambda wc: GRM["model"] or policy_dir("sft"),  # grm.model, or the starting policy (the paper)
        seed=config["seed"],
        trust_remote_code=config["engine"]["trust_remote_code"],
        checkpoint_dir=lambda wc: f"{RESULTS}/checkpoints/grm",
    log:
        f"{LOGS}/grm_train.log",
    benchmark:
        f"{BENCH}/grm_train.tsv"
    threads: workflow.cores
    resources:
        **group_resources("train"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/grm_train.py"


rule grm_eval:
    input:
        model=f"{RESULTS}/grm/model",
        data=f"{RESULTS}/grm/data.parquet",
    output:
        f"{RESULTS}/grm/quality.json",
    params:
        grm=canonical({k: GRM[k] for k in ("prompts", "generation", "eval_limit")}),
        adapter=TASK["adapter"],
        engine=canonical(config["engine"]),
    log:
        f"{LOGS}/grm_eval.log",
    benchmark:
        f"{BENCH}/grm_eval.tsv"
    threads: workflow.cores
    resources:
        **group_resources("generate"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/grm_eval.py"


rule grm_rewrite:
    input:
        model=f"{RESULTS}/grm/model",
        samples=f"{RESULTS}/samples/sft/{GRM['rewrite_draw']}.parquet",
        problems=f"{DATA}/{SAMPLE['split']}.parquet",
    output:
        rewrites=f"{RESULTS}/grm/rewrites.parquet",
        metrics=f"{RESULTS}/grm/rewrites_metrics.json",
    params:
        grm=canonical({k: GRM[k] for k in ("prompts", "generation")}),
        adapter=TASK["adapter"],
        engine=canonical(config["engine"]),
        max_edit_ratio=config["teacher"]["max_edit_ratio"],
    log:
        f"{LOGS}/grm_rewrite.log",
    benchmark:
        f"{BENCH}/grm_rewrite.tsv"
    threads: workflow.cores
    resources:
        **group_resources("generate"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/grm_rewrite.py"
