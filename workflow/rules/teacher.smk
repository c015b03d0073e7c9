TEACHER = config["teacher"]


rule teacher:
    input:
        samples=f"{RESULTS}/samples/sft/teacher.parquet",
        problems=f"{DATA}/{SAMPLE['split']}.parquet",
        policy=policy_requirement("sft"),  # its tokenizer measures edit distances
    output:
        rewrites=f"{RESULTS}/teacher/rewrites.parquet",
        metrics=f"{RESULTS}/teacher/metrics.json",
    params:
        teacher=canonical(TEACHER),
        adapter=TASK["adapter"],
        seed=config["seed"],
        tokenizer=lambda wc: policy_dir("sft"),
        trust_remote_code=config["engine"]["trust_remote_code"],
        # Outside the declared outputs: survives a failed or killed job, so a rerun pays for nothing twice.
        cache=f"{RESULTS}/cache/teacher_{TEACHER['backend']}.jsonl",
    log:
        f"{LOGS}/teacher.log",
    benchmark:
        f"{BENCH}/teacher.tsv"
    resources:
        **group_resources("teacher"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/teacher.py"
