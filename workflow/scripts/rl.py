"""Stage script of `rl` and `method_rl`: the RLMEC update, or a baseline/ablation through the same
machinery (see rlmec_core.stages.rl and rlmec_core.methods), in this process or under `accelerate launch`
(config `launch`, rlmec_core.launch)."""

from rlmec_core.launch import run_training
from rlmec_core.workflow import plain, stage_context


def main(smk) -> None:
    with stage_context(smk, "rl"):
        run_training("rl", {
            "labels_path": smk.input.labels, "policy_dir": smk.params.policy, "out_dir": smk.output.model,
            "rl_cfg": plain(smk.params.rl), "seed": smk.params.seed, "checkpoint_dir": smk.params.checkpoint_dir,
            "metrics_path": smk.output.metrics, "trust_remote_code": smk.params.trust_remote_code,
            "method": smk.params.get("method", "rlmec"),
            "instance_rewards": list(smk.params.get("instance_rewards", (1.0, -1.0))),
            "dpo_beta": smk.params.get("dpo_beta", 0.1), "samples_path": smk.input.get("samples"),
            "chat_template": smk.params.get("chat_template", False),
            "validation_path": smk.input.get("validation"), "adapter_name": smk.params.get("adapter"),
            "prompt_template": smk.params.get("prompt_template"),
        }, smk.config.get("launch"))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
