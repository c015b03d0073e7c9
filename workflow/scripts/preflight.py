"""Stage script `preflight` (and `round_preflight`): the checks of the labels, and of the GRM that made them,
before any update trains on them (see rlmec_core.preflight). Writes every check; a failing stopping check
fails the job with the figures and the config keys to change. Thresholds come from the config, not params."""

from rlmec_core.preflight import run_preflight
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "preflight"):
        run_preflight(smk.input.label_metrics, smk.output[0], grm_quality_path=smk.input.get("grm_quality"),
                      grm_cfg=smk.config["grm"], label_cfg=smk.config["label"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
