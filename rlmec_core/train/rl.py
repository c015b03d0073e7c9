"""Batches and the loss of the RLMEC policy update (RLMEC.md stage 6), for ``rlmec_core.train.loop``.

One labelled sample becomes an :class:`RLExample`: the prompt followed by ``y`` with its token rewards
and old log-probs, and the prompt followed by ``z`` (the imitation target) with its weights.
:class:`RLCollator` stacks both sequences of every example into one right-padded ``[2B, W]`` batch, so
a single forward pass gives ``log pi_theta`` of ``y`` (rows ``0..B-1``) and of ``z`` (rows ``B..2B-1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlmec_core.logprobs import token_logprobs
from rlmec_core.losses import rlmec_loss
from rlmec_core.train.dist import data_parallel_world, global_denominators


@dataclass(frozen=True)
class RLExample:
    prompt_ids: list[int]
    token_ids: list[int]  # y
    rewards: list[float]  # [len(y)]
    old_logprobs: list[float]  # [len(y)]
    imitation_ids: list[int]  # z
    imitation_weights: list[float]  # [len(z)]

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("an RL example needs a non-empty prompt")
        if not (len(self.token_ids) == len(self.rewards) == len(self.old_logprobs)):
            raise ValueError(f"token_ids ({len(self.token_ids)}), rewards ({len(self.rewards)}) and old_logprobs "
                             f"({len(self.old_logprobs)}) differ in length")
        if len(self.imitation_ids) != len(self.imitation_weights):
            raise ValueError(f"imitation_ids ({len(self.imitation_ids)}) and imitation_weights "
                             f"({len(self.imitation_weights)}) differ in length")


class RLCollator:
    """Pack examples into tensors (``W`` = longest prompt + sequence of the batch, right padding):

    - ``input_ids``, ``attention_mask``, ``target_mask``: ``[2B, W]``; rows ``b`` hold prompt + ``y``,
      rows ``B + b`` prompt + ``z``; ``target_mask`` is True on the ``y`` / ``z`` tokens;
    - ``rewards``, ``old_logprobs``: ``[B, W]``, the values at ``y``'s positions, 0 elsewhere;
    - ``imitation_weights``: ``[B, W]``, ``w_j`` at ``z``'s positions, 0 elsewhere.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[RLExample]) -> dict[str, torch.Tensor]:
        b = len(examples)
        width = max(len(e.prompt_ids) + max(len(e.token_ids), len(e.imitation_ids)) for e in examples)
        ids = torch.full((2 * b, width), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((2 * b, width), dtype=torch.bool)
        tmask = torch.zeros((2 * b, width), dtype=torch.bool)
        rewards = torch.zeros((b, width), dtype=torch.float32)
        old = torch.zeros((b, width), dtype=torch.float32)
        weights = torch.zeros((b, width), dtype=torch.float32)
        for i, e in enumerate(examples):
            p = len(e.prompt_ids)
            for row, seq in ((i, e.token_ids), (b + i, e.imitation_ids)):
                ids[row, : p + len(seq)] = torch.tensor([*e.prompt_ids, *seq], dtype=torch.long)
                attn[row, : p + len(seq)] = True
                tmask[row, p : p + len(seq)] = True
            rewards[i, p : p + len(e.token_ids)] = torch.tensor(e.rewards, dtype=torch.float32)
            old[i, p : p + len(e.token_ids)] = torch.tensor(e.old_logprobs, dtype=torch.float32)
            weights[i, p : p + len(e.imitation_ids)] = torch.tensor(e.imitation_weights, dtype=torch.float32)
        # ``rewards`` first: the training loop counts examples by the first tensor's rows
        return {"rewards": rewards, "old_logprobs": old, "imitation_weights": weights, "input_ids": ids,
                "attention_mask": attn, "target_mask": tmask}


def rl_batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, clip_eps: float,
                  imitation_coef: float, ratio_form: str) -> tuple[torch.Tensor, dict[str, float]]:
    """``rlmec_loss`` of a collated batch: one forward pass for ``y`` and ``z`` (``[2B, W]``), split in two."""
    b = batch["rewards"].shape[0]
    # data parallel: divide by the global batch's counts (None in one process; see rlmec_core.train.dist)
    denominators = None
    if data_parallel_world() > 1:
        denominators = global_denominators((batch["rewards"] != 0).sum(), (batch["imitation_weights"] != 0).sum())
    logp = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["target_mask"])  # [2B, W]
    device = logp.device
    return rlmec_loss(logp[:b], batch["old_logprobs"].to(device), batch["rewards"].to(device), logp[b:],
                      batch["imitation_weights"].to(device), clip_eps=clip_eps, imitation_coef=imitation_coef,
                      ratio_form=ratio_form, denominators=tuple(denominators) if denominators else None)


def count_rl_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens the forward pass reads (both sequences of every example)."""
    return int(batch["attention_mask"].sum())
