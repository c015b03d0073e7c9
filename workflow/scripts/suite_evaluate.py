"""Stage script `suite_evaluate`: one policy on every set of eval_suite (rlmec_core.stages.eval_suite)."""

from pathlib import Path

from rlmec_core.config import engine_settings
from rlmec_core.stages.eval_suite import evaluate_suite, suite_tasks
from rlmec_core.workflow import plain, stage_context


def main(smk) -> None:
    with stage_context(smk, "suite_evaluate"):
        tasks = suite_tasks(plain(smk.params.tasks))
        evaluate_suite(smk.params.model, tasks, {t.name: Path(f"data/suite/{t.name}") for t in tasks},
                       Path(smk.output.metrics).parent, default_template=smk.params.default_template,
                       max_new_tokens=smk.params.max_new_tokens, engine=engine_settings(smk.params.engine),
                       seed=smk.params.seed, confidence=smk.params.confidence, chat_template=smk.params.chat_template)


if __name__ == "__main__":  # vLLM spawns worker processes that re-import this module
    main(snakemake)  # noqa: F821 (injected by Snakemake)
