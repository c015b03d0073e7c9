"""Stage script `method_grpo`: the GRPO baseline through TRL (see rlmec_core.stages.grpo)."""

from rlmec_core.stages.grpo import grpo_update
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "method_grpo"):
        grpo_update(smk.input.data, smk.params.policy, smk.output.model, adapter_name=smk.params.adapter,
                    prompt_template=smk.params.prompt_template, draw=smk.params.draw, sample_cfg=smk.params.sample,
                    grpo_cfg=smk.params.grpo, seed=smk.params.seed, checkpoint_dir=smk.params.checkpoint_dir,
                    metrics_path=smk.output.metrics, trust_remote_code=smk.params.trust_remote_code)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
