# RLMEC pipeline. Run `snakemake --cores all` (embedded demo, config/config.yaml); see README.md.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


# Unknown keys and wrong types stop here, before any job runs; defaults come from the schema.
validate(config, "config/schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/policy.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/grm.smk"
include: "workflow/rules/label.smk"
include: "workflow/rules/rl.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/rounds.smk"
include: "workflow/rules/eval_suite.smk"


rule all:
    default_target: True
    input:
        final_targets(),


onsuccess:
    print_summary()
