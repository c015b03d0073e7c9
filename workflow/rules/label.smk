from rlmec_core.preflight import LABEL_THRESHOLDS

LABEL = config["label"]
# what the label stage computes with: the pre-flight thresholds (read by the RL stage) are not its params
LABEL_PARAMS = {k: v for k, v in LABEL.items() if k not in LABEL_THRESHOLDS}
# Rewrites of the samples that labelling uses: the GRM's rewrites of grm.rewrite_draw (the method; a fresh
# draw by default), or the teacher's rewrites of its own draw (the rlmec_teacher_rewrites ablation).
LABEL_SOURCES = {
    "grm": (f"{RESULTS}/grm/rewrites.parquet", f"{RESULTS}/samples/sft/{GRM['rewrite_draw']}.parquet"),
    "teacher": (f"{RESULTS}/teacher/rewrites.parquet", f"{RESULTS}/samples/sft/teacher.parquet"),
}


rule label:
    input:
        grm=f"{RESULTS}/grm/model",
        policy=policy_requirement("sft"),
        rewrites=LABEL_SOURCES[LABEL["rewrites"]][0],
        samples=LABEL_SOURCES[LABEL["rewrites"]][1],
    output:
        labels=f"{RESULTS}/label/token_rewards.parquet",
        metrics=f"{RESULTS}/label/metrics.json",
    params:
        policy=lambda wc: policy_dir("sft"),
        label=canonical(LABEL_PARAMS),
        grm=canonical({k: GRM[k] for k in ("prompts",)}),
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        engine=canonical(config["engine"]),
    log:
        f"{LOGS}/label.log",
    benchmark:
        f"{BENCH}/label.tsv"
    threads: workflow.cores
    resources:
        **group_resources("generate"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/label.py"
