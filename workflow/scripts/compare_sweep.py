"""Stage script `compare_sweep`: the learning-rate sweep table on the validation split (see rlmec_core.compare)."""

from rlmec_core.compare import build_sweep
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "compare_sweep"):
        build_sweep(smk.params.runs, in_use=smk.params.in_use, seed=smk.params.seed, out_md=smk.output.table,
                    out_json=smk.output.data)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
