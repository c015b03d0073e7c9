rule evaluate:
    input:
        model=policy_input,
        data=f"{DATA}/{{split}}.parquet",
    output:
        predictions=f"{RESULTS}/eval/{{policy}}/{{split}}/predictions.parquet",
        metrics=f"{RESULTS}/eval/{{policy}}/{{split}}/metrics.json",
    params:
        model=lambda wc: policy_dir(wc.policy),
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        prompt_template=lambda wildcards: TASK["prompt_template"],  # a function: "{question}" is no wildcard
        engine=canonical(config["engine"]),
        evaluate=canonical({k: v for k, v in config["evaluate"].items() if k != "splits"}),
        seed=config["seed"],
    log:
        f"{LOGS}/evaluate/{{policy}}_{{split}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{policy}}_{{split}}.tsv"
    threads: workflow.cores
    resources:
        **group_resources("generate"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"
