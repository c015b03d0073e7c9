"""Stage script `teacher`: minimal-edit rewrites of wrong samples (see rlmec_core.stages.teacher)."""

from rlmec_core.stages.teacher import run_teacher
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "teacher"):
        run_teacher(
            smk.input.samples,
            smk.input.problems,
            smk.params.tokenizer,
            smk.output.rewrites,
            smk.output.metrics,
            adapter_name=smk.params.adapter,
            teacher_cfg=smk.params.teacher,
            seed=smk.params.seed,
            cache_path=smk.params.cache,
            trust_remote_code=smk.params.trust_remote_code,
        )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
