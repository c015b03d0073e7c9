rule data:
    input:
        unpack(data_sources),  # local source files and directories; a hub data set is a param (task.source)
    output:
        train=f"{DATA}/train.parquet",
        validation=f"{DATA}/validation.parquet",
        test=f"{DATA}/test.parquet",
        stats=f"{DATA}/stats.json",
    params:
        task=canonical({k: v for k, v in TASK.items() if k != "prompt_template"}),  # the template only matters to models
        seed=config["seed"],
    log:
        f"{LOGS}/data.log",
    benchmark:
        f"{BENCH}/data.tsv"
    resources:
        **group_resources("cpu"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/data.py"
