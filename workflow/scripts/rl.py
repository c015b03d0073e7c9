"""Stage script `rl`: the RLMEC policy update (see rlmec_core.stages.rl)."""

from rlmec_core.stages.rl import rl_update
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "rl"):
        rl_update(smk.input.labels, smk.params.policy, smk.output.model, rl_cfg=smk.params.rl, seed=smk.params.seed,
                  checkpoint_dir=smk.params.checkpoint_dir, metrics_path=smk.output.metrics,
                  trust_remote_code=smk.params.trust_remote_code)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
