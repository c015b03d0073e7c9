"""Stage script `grm_data`: the GRM's two tasks from the teacher's rewrites (see rlmec_core.stages.grm)."""

from rlmec_core.stages.grm import build_grm_data
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "grm_data"):
        build_grm_data(smk.input.rewrites, smk.output.data, smk.output.stats, adapter_name=smk.params.adapter,
                       grm_cfg=smk.params.grm, seed=smk.params.seed)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
