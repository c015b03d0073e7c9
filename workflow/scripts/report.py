"""Stage script `report`: report.html, summary.md and the charts of a run (see rlmec_core.report); the rule names
its stage files by the roles of rlmec_core.report.STAGE_FILES."""

from pathlib import Path

from rlmec_core.report import STAGE_FILES, build_report, eval_paths_by_policy
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "report"):
        build_report(
            eval_metrics=eval_paths_by_policy(smk.input.eval),
            grm_quality=smk.input.grm_quality,
            stage_metrics={role: getattr(smk.input, role) for role in STAGE_FILES},
            train_logs={Path(p).stem: p for p in smk.input.train_logs},
            token_rewards=smk.input.token_rewards,
            out_html=smk.output.html,
            out_md=smk.output.md,
            fig_dir=smk.output.figures,
            title=smk.params.title,
            n_examples=smk.params.n_examples,
            seed=smk.params.seed,
            pos_clip=smk.params.label["pos_clip"],
            neg_clip=smk.params.label["neg_clip"],
            kept_weight=smk.params.label["kept_weight"],
            comparison=smk.input.get("comparison"),
            comparison_chart=smk.input.get("comparison_chart"),
            rounds=smk.input.get("rounds"),
            rounds_chart=smk.input.get("rounds_chart"),
            checks=smk.input.get("checks"),
            rl_lr=smk.params.get("rl_lr"),
        )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
