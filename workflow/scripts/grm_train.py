"""Stage script `grm_train`: supervised fine-tuning of the GRM (see rlmec_core.stages.grm), in this process or
under `accelerate launch` (config `launch`, rlmec_core.launch)."""

from rlmec_core.launch import run_training
from rlmec_core.workflow import plain, stage_context


def main(smk) -> None:
    with stage_context(smk, "grm_train"):
        run_training("grm_train", {
            "data_path": smk.input.data, "init_model": smk.params.init, "out_dir": smk.output.model,
            "grm_cfg": plain(smk.params.grm), "seed": smk.params.seed, "checkpoint_dir": smk.params.checkpoint_dir,
            "metrics_path": smk.output.metrics, "trust_remote_code": smk.params.trust_remote_code,
        }, smk.config.get("launch"))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
