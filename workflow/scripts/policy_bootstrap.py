"""Stage script `policy_bootstrap`: build and SFT the tiny demo policy (see rlmec_core.stages.policy)."""

from rlmec_core.stages.policy import bootstrap_policy
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "policy_bootstrap"):
        bootstrap_policy(
            smk.input.train,
            smk.output.model,
            adapter_name=smk.params.adapter,
            prompt_template=smk.params.prompt_template,
            bootstrap=smk.params.bootstrap,
            seed=smk.params.seed,
            checkpoint_dir=smk.params.checkpoint_dir,
            metrics_path=smk.output.metrics,
        )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
