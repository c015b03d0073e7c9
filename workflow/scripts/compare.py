"""Stage script `compare`: the methods table, its JSON and chart (see rlmec_core.compare)."""

from rlmec_core.compare import build_comparison
from rlmec_core.workflow import plain, stage_context


def main(smk) -> None:
    with stage_context(smk, "compare"):
        build_comparison(smk.params.runs, test_problems=smk.input.test, out_md=smk.output.table, out_json=smk.output.data,
                         out_png=smk.output.chart, rl_cfg=smk.params.rl,
                         sweep_json=smk.input.sweep[0] if smk.input.sweep else None, synth=plain(smk.params.synth))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
