"""Stage script `round_rft`: one round of iterated rejection-sampling fine-tuning on the policy's own samples
(see rlmec_core.stages.rl.rft_update), in this process or under `accelerate launch` (config `launch`)."""

from rlmec_core.launch import run_training
from rlmec_core.workflow import plain, stage_context


def main(smk) -> None:
    with stage_context(smk, "rft"):
        run_training("rft", {
            "samples_path": smk.input.samples, "policy_dir": smk.params.policy, "out_dir": smk.output.model,
            "rl_cfg": plain(smk.params.rl), "seed": smk.params.seed, "checkpoint_dir": smk.params.checkpoint_dir,
            "metrics_path": smk.output.metrics, "trust_remote_code": smk.params.trust_remote_code,
            "chat_template": smk.params.chat_template, "batch_tokens": smk.params.batch_tokens,
            "validation_path": smk.input.get("validation"), "adapter_name": smk.params.adapter,
            "prompt_template": smk.params.prompt_template,
        }, smk.config.get("launch"))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
