"""Stage script `rounds`: accuracy by round of iterative RLMEC, its JSON and chart (see rlmec_core.rounds)."""

from rlmec_core.rounds import build_rounds
from rlmec_core.workflow import plain, stage_context


def main(smk) -> None:
    with stage_context(smk, "rounds"):
        build_rounds(plain(smk.params.chains), out_md=smk.output.table, out_json=smk.output.data,
                     out_png=smk.output.chart, grm_quality=plain(smk.params.grm_quality),
                     splits=tuple(smk.params.splits))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
