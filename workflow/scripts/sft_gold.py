"""Stage script of `sft_gold` and `method_sft_gold`: more SFT of the starting policy on the gold solutions of the
RL draw's problems (see rlmec_core.stages.rl.sft_gold_update), in this process or under `accelerate launch`."""

from rlmec_core.launch import run_training
from rlmec_core.workflow import plain, stage_context


def main(smk) -> None:
    with stage_context(smk, "sft_gold"):
        run_training("sft_gold", {
            "problems_path": smk.input.data, "policy_dir": smk.params.policy, "out_dir": smk.output.model,
            "draw": plain(smk.params.draw), "adapter_name": smk.params.adapter,
            "prompt_template": smk.params.prompt_template, "chat_template": smk.params.chat_template,
            "train_cfg": plain(smk.params.train),
            "seed": smk.params.seed, "checkpoint_dir": smk.params.checkpoint_dir, "metrics_path": smk.output.metrics,
            "trust_remote_code": smk.params.trust_remote_code, "match_labels": smk.input.get("match_labels"),
            "validation_cfg": plain(smk.params.validation), "validation_path": smk.input.get("validation"),
        }, smk.config.get("launch"))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
