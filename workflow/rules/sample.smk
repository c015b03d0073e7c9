# Solutions sampled from a policy. Draws (config sample.draws): "teacher" (rewritten by the teacher) and
# "rl" (rewritten by the GRM, labelled and used for the RL update).
SAMPLE = config["sample"]
DRAW_SEEDS = {"teacher": 1, "rl": 2}  # added to the run's seed: every draw reproducible and distinct


rule sample:
    input:
        model=policy_input,
        data=f"{DATA}/{SAMPLE['split']}.parquet",
    output:
        f"{RESULTS}/samples/{{policy}}/{{draw}}.parquet",
    params:
        model=lambda wc: policy_dir(wc.policy),
        adapter=TASK["adapter"],
        chat_template=TASK["chat_template"],
        prompt_template=lambda wildcards: TASK["prompt_template"],  # a function: "{question}" is no wildcard
        sample=canonical({k: v for k, v in SAMPLE.items() if k not in ("split", "draws")}),
        draw=lambda wc: canonical(SAMPLE["draws"][wc.draw]),
        seed=lambda wc: config["seed"] + DRAW_SEEDS[wc.draw],
        engine=canonical(config["engine"]),
    wildcard_constraints:
        draw="|".join(DRAW_SEEDS),
    log:
        f"{LOGS}/sample/{{policy}}_{{draw}}.log",
    benchmark:
        f"{BENCH}/sample/{{policy}}_{{draw}}.tsv"
    threads: workflow.cores
    resources:
        **group_resources("generate"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/sample.py"
