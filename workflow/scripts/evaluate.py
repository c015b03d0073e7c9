"""Stage script `evaluate`: greedy-decode a split and score it (see rlmec_core.stages.evaluate)."""

from rlmec_core.config import engine_settings
from rlmec_core.stages.evaluate import evaluate_policy
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "evaluate"):
        ev = smk.params.evaluate
        evaluate_policy(
            smk.params.model,
            smk.input.data,
            smk.output.predictions,
            smk.output.metrics,
            adapter_name=smk.params.adapter,
            prompt_template=smk.params.prompt_template,
            chat_template=smk.params.chat_template,
            max_new_tokens=ev["max_new_tokens"],
            engine=engine_settings(smk.params.engine),
            seed=smk.params.seed,
            confidence=ev["confidence"],
            limit=ev["limit"],
        )


if __name__ == "__main__":  # vLLM spawns worker processes that re-import this module
    main(snakemake)  # noqa: F821 (injected by Snakemake)
