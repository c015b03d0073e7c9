"""Data-parallel helpers: loss denominators that make N processes train exactly like one.

Under data parallelism (accelerate's DDP, DeepSpeed ZeRO, FSDP) every process computes the loss of its
own shard and the gradients are *averaged* over the ``P`` processes. A token-mean loss computed per shard
(``sum_p / n_p``) then averages the shard means, which is not the token mean of the global batch when the
shards hold different numbers of tokens. Dividing each shard's sum by ``(n_1 + ... + n_P) / P`` instead
makes the averaged gradient (and the averaged loss) exactly that of one process holding the whole global
batch: ``(1/P) sum_p sum_p / (N/P) = sum / N``.
"""

from __future__ import annotations

import torch


def data_parallel_world() -> int:
    """Processes of the initialised ``torch.distributed`` group (1 when there is none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def global_denominators(*counts: torch.Tensor | int | float) -> list[float] | None:
    """Per-process denominators ``max(sum over processes of count, 1) / P`` for each local ``count``.

    ``counts``: local token (or example) counts of this process's micro-batch, 0-dim tensors or numbers.
    Returns None in a single process (callers then use their own ``max(count, 1)``, which is the same
    value), so single-process runs pay nothing. One ``all_reduce`` of a ``[len(counts)]`` float64 vector.
    """
    world = data_parallel_world()
    if world == 1:
        return None
    import torch.distributed as dist

    local = torch.tensor([float(c) for c in counts], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        local = local.cuda()
    dist.all_reduce(local, op=dist.ReduceOp.SUM)
    return [max(v, 1.0) / world for v in local.tolist()]
