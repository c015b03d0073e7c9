"""The methods of the comparison (issue 7) as transformations of the labelled samples.

Every method below trains the same starting policy on the same labelled samples
(``token_rewards.parquet``) with the same loss machinery (``rlmec_loss``); they differ only in the
rewards ``r_t``, the imitation target/weights ``w_j``, and whose rewrites made the labels:

============================  ===========  ==============  ============================================
method                        labels from  rewards r_t     imitation term
============================  ===========  ==============  ============================================
``rlmec``                     GRM          token (GRM)     rewrite z, w = 1.0 edited / 0.5 kept
``rlmec_no_imitation``        GRM          token (GRM)     none (lambda = 0)
``rlmec_imitation_only``      GRM          none (0)        rewrite z, w = 1.0 edited / 0.5 kept
``rlmec_teacher_rewrites``    teacher      token (GRM)     the teacher's rewrite z
``instance_rl``               GRM          one per sample  rewrite z, w = 1.0 edited / 0.5 kept
                                           (+1 / -1) on
                                           every token
``instance_rl_no_imitation``  GRM          one per sample  none (lambda = 0)
``rft``                       GRM          none (0)        correct samples only, w = 1 (plain SFT)
``dpo``                       GRM          --              -- (DPO loss on (correct, wrong) pairs of a
                                                           problem; reference = the sampling policy)
``sft_gold``                  --           --              -- (SFT on the gold reference solutions of
                                                           the rl draw's problems; no samples at all)
============================  ===========  ==============  ============================================

``sft`` (no update) is the starting policy itself. ``instance_rl`` keeps everything of ``rlmec`` except
the reward's granularity, which is the comparison the paper's claim rests on (``rlmec - instance_rl``);
``rlmec_no_imitation - instance_rl_no_imitation`` asks the same question without the imitation term.
``sft_gold`` is the strongest simple baseline: more supervised training on the same problems' gold data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from rlmec_core.train.rl import RLExample


@dataclass(frozen=True)
class Method:
    name: str
    labels: str  # "grm" | "teacher": whose rewrites labelled the samples; "gold": no samples (sft_gold)
    reward: str  # "token" | "instance" | "none"
    imitation: str  # "rewrite" | "none" | "correct_sft"
    trains: bool = True


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sft", "grm", "none", "none", trains=False),
    Method("rft", "grm", "none", "correct_sft"),
    Method("instance_rl", "grm", "instance", "rewrite"),
    Method("instance_rl_no_imitation", "grm", "instance", "none"),
    Method("rlmec", "grm", "token", "rewrite"),
    Method("rlmec_no_imitation", "grm", "token", "none"),
    Method("rlmec_imitation_only", "grm", "none", "rewrite"),
    Method("rlmec_teacher_rewrites", "teacher", "token", "rewrite"),
    Method("dpo", "grm", "none", "none"),  # its own loss: rlmec_core.train.dpo
    Method("sft_gold", "gold", "none", "none"),  # its own data: rlmec_core.stages.rl.sft_gold_update
)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]


def method_examples(method: Method, examples: Sequence[RLExample], correct: Sequence[bool], *,
                    instance_rewards: tuple[float, float] = (1.0, -1.0)) -> list[RLExample]:
    """The training examples of ``method`` from the labelled ``examples`` (``correct[i]``: sample i's flag).

    - ``reward="none"``: every ``r_t = 0`` (no RL term); ``"instance"``: ``r_t = instance_rewards[0]`` on every
      token of a correct sample, ``instance_rewards[1]`` on every token of a wrong one; ``"token"``: unchanged.
    - ``imitation="none"``: every ``w_j = 0``; ``"correct_sft"``: only correct samples are kept, with target
      ``y`` and ``w_j = 1`` (rejection-sampling fine-tuning); ``"rewrite"``: unchanged.
    """
    if len(examples) != len(correct):
        raise ValueError(f"{len(examples)} examples but {len(correct)} correctness flags")
    if not method.trains:
        raise ValueError(f"method {method.name!r} does not train")
    if method.labels == "gold":
        raise ValueError(f"method {method.name!r} trains on the problems' gold solutions, not on labelled samples")
    out = []
    for ex, ok in zip(examples, correct, strict=True):
        if method.imitation == "correct_sft" and not ok:
            continue
        if method.reward == "none":
            ex = replace(ex, rewards=[0.0] * len(ex.rewards))
        elif method.reward == "instance":
            ex = replace(ex, rewards=[float(instance_rewards[0] if ok else instance_rewards[1])] * len(ex.rewards))
        if method.imitation == "none":
            ex = replace(ex, imitation_weights=[0.0] * len(ex.imitation_weights))
        elif method.imitation == "correct_sft":
            ex = replace(ex, imitation_ids=list(ex.token_ids), imitation_weights=[1.0] * len(ex.token_ids))
        out.append(ex)
    if not out:
        raise ValueError(f"method {method.name!r} keeps none of the {len(examples)} labelled samples")
    return out
