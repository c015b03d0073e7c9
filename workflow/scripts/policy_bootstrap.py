"""Stage script `policy_bootstrap`: build and SFT the tiny demo policy (see rlmec_core.stages.policy)."""

from rlmec_core.launch import run_training
from rlmec_core.workflow import plain, stage_context


def main(smk) -> None:
    with stage_context(smk, "policy_bootstrap"):
        run_training("policy_bootstrap", {
            "train_path": smk.input.train, "out_dir": smk.output.model, "adapter_name": smk.params.adapter,
            "prompt_template": smk.params.prompt_template, "chat_template": smk.params.chat_template,
            "bootstrap": plain(smk.params.bootstrap),
            "seed": smk.params.seed, "checkpoint_dir": smk.params.checkpoint_dir, "metrics_path": smk.output.metrics,
            "validation_path": smk.input.validation,
        }, smk.config.get("launch"))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
