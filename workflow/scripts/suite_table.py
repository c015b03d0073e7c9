"""Stage script `suite_table`: the evaluation suite's table (rlmec_core.stages.eval_suite)."""

from rlmec_core.stages.eval_suite import suite_table
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "suite_table"):
        suite_table(dict(zip(smk.params.policies, smk.input, strict=True)), smk.output.table, smk.output.data)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
