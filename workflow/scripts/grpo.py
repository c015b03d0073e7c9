"""Stage script `method_grpo`: the GRPO baseline through TRL (see rlmec_core.stages.grpo), in this process or
under `accelerate launch` (config `launch`, rlmec_core.launch)."""

from rlmec_core.launch import run_training
from rlmec_core.workflow import plain, stage_context


def main(smk) -> None:
    with stage_context(smk, "method_grpo"):
        run_training("grpo", {
            "problems_path": smk.input.data, "policy_dir": smk.params.policy, "out_dir": smk.output.model,
            "adapter_name": smk.params.adapter, "prompt_template": smk.params.prompt_template,
            "chat_template": smk.params.chat_template,
            "draw": plain(smk.params.draw), "sample_cfg": plain(smk.params.sample), "grpo_cfg": plain(smk.params.grpo),
            "seed": smk.params.seed, "checkpoint_dir": smk.params.checkpoint_dir, "metrics_path": smk.output.metrics,
            "trust_remote_code": smk.params.trust_remote_code,
            "validation_cfg": plain(smk.params.get("validation", {})), "validation_path": smk.input.get("validation"),
        }, smk.config.get("launch"))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
