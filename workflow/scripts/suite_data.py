"""Stage script `suite_data`: one evaluation set of eval_suite into problem tables (rlmec_core.stages.eval_suite)."""

from rlmec_core.stages.eval_suite import SuiteTask, build_suite_data
from rlmec_core.workflow import plain, stage_context


def main(smk) -> None:
    with stage_context(smk, "suite_data"):
        task = SuiteTask.from_config(plain(smk.params.task), 0)
        build_suite_data(task, smk.output.test, smk.output.shots)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
