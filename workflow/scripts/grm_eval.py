"""Stage script `grm_eval`: the GRM's quality on held-out problems (see rlmec_core.stages.grm)."""

from rlmec_core.config import engine_settings
from rlmec_core.stages.grm import evaluate_grm
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "grm_eval"):
        evaluate_grm(smk.input.model, smk.input.data, smk.output[0], adapter_name=smk.params.adapter,
                     grm_cfg=smk.params.grm, engine=engine_settings(smk.params.engine),
                     limit=smk.params.grm["eval_limit"])


if __name__ == "__main__":  # vLLM may spawn worker processes that re-import this module
    main(snakemake)  # noqa: F821 (injected by Snakemake)
