# The paper's evaluation suite as one target: `snakemake --cores all eval_suite` evaluates the policies of
# eval_suite.policies on every set of eval_suite.tasks (any supported family) into one table
# (rlmec_core/stages/eval_suite.py, docs/eval_suite.md). Not part of the default target.


rule suite_data:
    input:
        suite_task_inputs,
    output:
        test=f"data/suite/{{suite_task}}/test.parquet",
        shots=f"data/suite/{{suite_task}}/shots.parquet",
    params:
        task=lambda wc: canonical(SUITE_TASKS[wc.suite_task]),
    wildcard_constraints:
        suite_task="|".join(SUITE_TASKS) or "$^",
    log:
        f"{LOGS}/suite_data/{{suite_task}}.log",
    benchmark:
        f"{BENCH}/suite_data/{{suite_task}}.tsv"
    resources:
        **group_resources("cpu"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/suite_data.py"


rule suite_evaluate:
    input:
        model=policy_input,
        data=lambda wc: suite_tables("test"),
        shots=lambda wc: suite_tables("shots"),
    output:
        metrics=f"{RESULTS}/eval_suite/{{policy}}/metrics.json",
        predictions=expand(f"{RESULTS}/eval_suite/{{{{policy}}}}/{{t}}/predictions.parquet", t=SUITE_TASKS),
    params:
        model=lambda wc: policy_dir(wc.policy),
        tasks=canonical(SUITE["tasks"]),
        default_template=lambda wildcards: TASK["prompt_template"],  # a function: "{question}" is no wildcard
        chat_template=TASK["chat_template"],
        max_new_tokens=SUITE["max_new_tokens"] or config["evaluate"]["max_new_tokens"],
        confidence=config["evaluate"]["confidence"],
        engine=canonical(config["engine"]),
        seed=config["seed"],
    log:
        f"{LOGS}/suite_evaluate/{{policy}}.log",
    benchmark:
        f"{BENCH}/suite_evaluate/{{policy}}.tsv"
    threads: workflow.cores
    resources:
        **group_resources("generate"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/suite_evaluate.py"


rule suite_table:
    input:
        expand(f"{RESULTS}/eval_suite/{{policy}}/metrics.json", policy=SUITE["policies"]),
    output:
        table=f"{RESULTS}/eval_suite/table.md",
        data=f"{RESULTS}/eval_suite/table.json",
    params:
        policies=SUITE["policies"],
    log:
        f"{LOGS}/suite_table.log",
    benchmark:
        f"{BENCH}/suite_table.tsv"
    resources:
        **group_resources("cpu"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/suite_table.py"


rule eval_suite:
    input:
        rules.suite_table.output,
    localrule: True
