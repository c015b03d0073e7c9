"""Stage script `label`: token rewards, old log-probs and imitation targets (see rlmec_core.stages.label)."""

from rlmec_core.config import engine_settings
from rlmec_core.stages.label import label_samples
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "label"):
        engine = engine_settings(smk.params.engine)
        label_samples(smk.input.grm, smk.params.policy, smk.input.samples, smk.input.rewrites, smk.output.labels,
                      smk.output.metrics, adapter_name=smk.params.adapter, grm_cfg=smk.params.grm,
                      label_cfg=smk.params.label, engine=engine, trust_remote_code=engine.trust_remote_code,
                      chat_template=smk.params.chat_template)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
