"""The GRM's two tasks as prompt -> target pairs (RLMEC.md stage 3).

- **error step:** instruction + problem + numbered reference + numbered prediction -> "The first error
  step is [k]";
- **rewrite:** instruction ("correct the mistakes ... minimal modifications") + problem + reference +
  prediction, ending with the response prefix ``Correct prediction:`` -> the rewrite ``z``.

The defaults follow the published GRM format (an instruction/input/response frame) in this project's
words; ``grm.prompts`` in the config replaces them (the demo uses a compact frame that fits its tiny
model's context). The rewrite prompt is also the one under which the GRM scores a sample's tokens
(stage 5): the probability of keeping ``y_t`` given the prompt and ``y_<t``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rlmec_core.teacher.protocol import number_steps

_FRAME = (
    "Below is an instruction that describes a task, paired with an input that provides context. "
    "Write a response that completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n"
    "Problem: {{question}}\nCorrect solution:\n{{reference}}\nPrediction:\n{{prediction}}\n\n### Response:\n"
)

ERROR_STEP_TEMPLATE = _FRAME.format(
    instruction="You are given a problem, its correct solution and a prediction from a language model. The "
    "prediction may use a different method from the correct solution and still be right. Identify the "
    "first wrong step of the prediction and write down its label."
)
REWRITE_TEMPLATE = _FRAME.format(
    instruction="Given the problem and its correct solution, correct the mistakes in the prediction to "
    "reach the correct answer. Make minimal modifications."
) + "Correct prediction:\n"
ERROR_TARGET_TEMPLATE = "The first error step is [{step}]"


@dataclass(frozen=True)
class GRMPrompts:
    """Config ``grm.prompts`` (a null entry means the default above)."""

    error_step: str = ERROR_STEP_TEMPLATE
    rewrite: str = REWRITE_TEMPLATE
    error_target: str = ERROR_TARGET_TEMPLATE

    @classmethod
    def from_config(cls, cfg: Mapping[str, object] | None) -> GRMPrompts:
        cfg = cfg or {}
        out = cls(
            error_step=str(cfg.get("error_step") or ERROR_STEP_TEMPLATE),
            rewrite=str(cfg.get("rewrite") or REWRITE_TEMPLATE),
            error_target=str(cfg.get("error_target") or ERROR_TARGET_TEMPLATE),
        )
        for name, template, fields in (
            ("error_step", out.error_step, ("{question}", "{reference}", "{prediction}")),
            ("rewrite", out.rewrite, ("{question}", "{reference}", "{prediction}")),
            ("error_target", out.error_target, ("{step}",)),
        ):
            missing = [f for f in fields if f not in template]
            if missing:
                raise ValueError(f"grm.prompts.{name} lacks the field(s) {missing}")
        return out

    def error_step_prompt(self, question: str, reference: Sequence[str], prediction: Sequence[str]) -> str:
        return self.error_step.format(
            question=question, reference=number_steps(reference), prediction=number_steps(prediction)
        )

    def error_step_target(self, step: int) -> str:
        return self.error_target.format(step=step)

    def rewrite_prompt(self, question: str, reference: Sequence[str], prediction: Sequence[str]) -> str:
        return self.rewrite.format(question=question, reference="\n".join(reference), prediction="\n".join(prediction))
