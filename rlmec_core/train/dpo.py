"""DPO on (correct, incorrect) sample pairs of the same problem (a preference baseline of issue 7).

Pairs come from the same draw of samples RLMEC is labelled from (every sample of it, not only those
with a verified rewrite). The reference policy is the sampling policy; its sequence log-probs are
computed once before training, so no second model is held in memory. Per pair ``(y+, y-)`` of ``x``:

    m = beta * ((log pi(y+|x) - log ref(y+|x)) - (log pi(y-|x) - log ref(y-|x)))
    L = -log sigmoid(m)              (mean over pairs)

where ``log pi(y|x)`` sums the token log-probs of ``y`` (Rafailov et al., 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlmec_core.logprobs import token_logprobs
from rlmec_core.prompting import encode_prompts


@dataclass(frozen=True)
class DPOPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    chosen_ref: float  # sum of the reference log-probs of the chosen tokens
    rejected_ids: list[int]
    rejected_ref: float


def pairs_from_samples(rows: Sequence[dict], tokenizer, *, chat_template: bool = False) -> list[DPOPair]:
    """Pairs from a samples table's rows (``SAMPLES`` columns): per problem, distinct correct and distinct
    wrong completions (after whitespace/punctuation normalisation); one pair per wrong completion, with
    the problem's correct ones chosen in turn. Sequences are the sampled token ids, plus EOS when the
    sample stopped by itself; prompts are encoded as the sampler encoded them (``chat_template``). Reference log-probs are left at 0 (see :func:`with_reference`)."""
    from rlmec_core.stages.label import normalise_solution

    by_problem: dict[str, tuple[dict, dict]] = {}
    for r in rows:
        if r["finish_reason"] == "prompt_too_long":
            continue
        good, bad = by_problem.setdefault(r["problem_id"], ({}, {}))
        (good if r["correct"] else bad).setdefault(normalise_solution(r["completion"]), r)
    eos = [tokenizer.eos_token_id]
    prompts: dict[str, list[int]] = {}
    pairs = []
    for good, bad in by_problem.values():
        chosen = list(good.values())
        for i, rejected in enumerate(bad.values()):
            if not chosen:
                break
            c = chosen[i % len(chosen)]
            if c["prompt"] not in prompts:
                prompts[c["prompt"]] = encode_prompts(tokenizer, [c["prompt"]], chat_template=chat_template)[0]
            seq = [list(x["token_ids"]) + (eos if x["finish_reason"] == "stop" else []) for x in (c, rejected)]
            pairs.append(DPOPair(prompts[c["prompt"]], seq[0], 0.0, seq[1], 0.0))
    return pairs


def with_reference(pairs: Sequence[DPOPair], model: torch.nn.Module, pad_token_id: int) -> list[DPOPair]:
    """``pairs`` with the reference sequence log-probs of ``model`` (batched, length-bucketed)."""
    from rlmec_core.scoring import score_targets

    prompts = [p.prompt_ids for p in pairs] * 2
    targets = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    logps = score_targets(model, prompts, targets, pad_token_id=pad_token_id, progress="dpo-reference")
    n = len(pairs)
    return [DPOPair(p.prompt_ids, p.chosen_ids, float(logps[i].sum()), p.rejected_ids, float(logps[n + i].sum()))
            for i, p in enumerate(pairs)]


class DPOCollator:
    """``input_ids``/``attention_mask``/``target_mask`` ``[2B, W]`` (rows ``b``: prompt + chosen, rows
    ``B + b``: prompt + rejected, right padding) and ``chosen_ref``, ``rejected_ref`` ``[B]`` (reference
    sequence log-probs)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, pairs: Sequence[DPOPair]) -> dict[str, torch.Tensor]:
        b = len(pairs)
        rows = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]
        width = max(len(pr) + len(y) for pr, y in rows)
        ids = torch.full((2 * b, width), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((2 * b, width), dtype=torch.bool)
        tmask = torch.zeros((2 * b, width), dtype=torch.bool)
        for i, (pr, y) in enumerate(rows):
            ids[i, : len(pr) + len(y)] = torch.tensor([*pr, *y], dtype=torch.long)
            attn[i, : len(pr) + len(y)] = True
            tmask[i, len(pr) : len(pr) + len(y)] = True
        return {"chosen_ref": torch.tensor([p.chosen_ref for p in pairs], dtype=torch.float32),
                "rejected_ref": torch.tensor([p.rejected_ref for p in pairs], dtype=torch.float32),
                "input_ids": ids, "attention_mask": attn, "target_mask": tmask}


def dpo_batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, beta: float
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean DPO loss of a collated batch; stats: reward margin, accuracy of the implicit reward."""
    logp = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["target_mask"]).sum(-1)  # [2B]
    b = logp.shape[0] // 2
    ratio = logp - torch.cat([batch["chosen_ref"], batch["rejected_ref"]]).to(logp.device)
    margin = beta * (ratio[:b] - ratio[b:])
    loss = -F.logsigmoid(margin).mean()
    return loss, {"reward_margin": float(margin.detach().mean()), "reward_acc": float((margin > 0).float().mean())}
