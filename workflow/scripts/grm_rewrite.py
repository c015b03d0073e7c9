"""Stage script `grm_rewrite`: the GRM rewrites fresh samples (see rlmec_core.stages.grm)."""

from rlmec_core.config import engine_settings
from rlmec_core.stages.grm import grm_rewrite
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "grm_rewrite"):
        grm_rewrite(smk.input.model, smk.input.samples, smk.input.problems, smk.output.rewrites, smk.output.metrics,
                    adapter_name=smk.params.adapter, grm_cfg=smk.params.grm, engine=engine_settings(smk.params.engine),
                    max_edit_ratio=smk.params.max_edit_ratio)


if __name__ == "__main__":  # vLLM may spawn worker processes that re-import this module
    main(snakemake)  # noqa: F821 (injected by Snakemake)
