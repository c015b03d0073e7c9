rule report:
    input:
        eval=expand(
            f"{RESULTS}/eval/{{policy}}/{{split}}/metrics.json",
            policy=["sft", "sft_gold", "rlmec"],
            split=config["evaluate"]["splits"],
        ),
        grm_quality=f"{RESULTS}/grm/quality.json",
        # the stage files of the data funnel, by the roles of rlmec_core.report.STAGE_FILES
        teacher_samples=f"{RESULTS}/samples/sft/teacher.parquet",
        teacher=f"{RESULTS}/teacher/metrics.json",
        grm_data=f"{RESULTS}/grm/data_stats.json",
        label_samples=LABEL_SOURCES[LABEL["rewrites"]][1],  # the draw the label stage labelled
        grm_rewrites=f"{RESULTS}/grm/rewrites_metrics.json",
        label=f"{RESULTS}/label/metrics.json",
        train_logs=[
            *([f"{RESULTS}/train_logs/policy_sft.jsonl"] if BOOTSTRAP else []),
            f"{RESULTS}/train_logs/grm.jsonl",
            f"{RESULTS}/train_logs/sft_gold.jsonl",
            f"{RESULTS}/train_logs/rl.jsonl",
        ],
        token_rewards=f"{RESULTS}/label/token_rewards.parquet",
        checks=f"{RESULTS}/checks/preflight.json",  # the RL stage's pre-flight checks: the health panel
        **({"rounds": f"{RESULTS}/rounds/table.json", "rounds_chart": f"{RESULTS}/rounds/accuracy_by_round.png"}
           if ROUNDS > 1 else {}),
    output:
        html=report(f"{RESULTS}/report.html", caption="../report/report.rst", category="RLMEC"),
        md=report(f"{RESULTS}/summary.md", caption="../report/summary.rst", category="RLMEC"),
        figures=report(
            directory(f"{RESULTS}/report_figures"),
            patterns=["{name}.png"],
            caption="../report/report_figures.rst",
            category="Report figures",
        ),
    params:
        title=f"RLMEC run '{RUN}'",
        n_examples=10,
        seed=config["seed"],
        # colour scale of the example tokens (clip ranges) and which rewrite tokens count as edited
        label=canonical({k: config["label"][k] for k in ("pos_clip", "neg_clip", "kept_weight")}),
        rl_lr=config["rl"]["train"]["lr"],  # named by the health panel's update check
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    resources:
        **group_resources("cpu"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/report.py"
