"""Stage script `data`: build data/<task>/{train,validation,test}.parquet (see rlmec_core.stages.data)."""

from rlmec_core.stages.data import run_data
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "data"):
        outputs = {split: smk.output[split] for split in ("train", "validation", "test")}
        run_data(smk.params.task, smk.params.seed, outputs, smk.output.stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
