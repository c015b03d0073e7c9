"""Stage script `grm_train`: supervised fine-tuning of the GRM (see rlmec_core.stages.grm)."""

from rlmec_core.stages.grm import train_grm
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "grm_train"):
        train_grm(smk.input.data, smk.params.init, smk.output.model, grm_cfg=smk.params.grm, seed=smk.params.seed,
                  checkpoint_dir=smk.params.checkpoint_dir, metrics_path=smk.output.metrics,
                  trust_remote_code=smk.params.trust_remote_code)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
