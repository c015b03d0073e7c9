"""Stage script `sample`: draw solutions from a policy and judge them (see rlmec_core.stages.sample)."""

from rlmec_core.config import engine_settings
from rlmec_core.sampling import SampleSettings
from rlmec_core.stages.sample import sample_policy
from rlmec_core.workflow import stage_context


def main(smk) -> None:
    with stage_context(smk, "sample"):
        s = smk.params.sample
        sample_policy(
            smk.params.model,
            smk.input.data,
            smk.output[0],
            adapter_name=smk.params.adapter,
            prompt_template=smk.params.prompt_template,
            chat_template=smk.params.chat_template,
            settings=SampleSettings(n=s["n"], temperature=s["temperature"], top_p=s["top_p"],
                                    max_new_tokens=s["max_new_tokens"], seed=smk.params.seed),
            engine=engine_settings(smk.params.engine),
            first=smk.params.draw["first"],
            limit=smk.params.draw["problems"],
            exact=smk.params.draw.get("exact", False),
        )


if __name__ == "__main__":  # vLLM may spawn worker processes that re-import this module
    main(snakemake)  # noqa: F821 (injected by Snakemake)
