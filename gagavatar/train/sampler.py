"""Batch order as a pure function of (seed, step, rank): resuming needs no sampler state.

Epoch e visits the dataset in the order ``randperm(n, seed + e)``; global step s
takes the next ``world_size * batch_size`` indices of that stream, and rank r
takes its own ``batch_size`` slice, so ranks never share a sample within a step.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch.utils.data import Sampler


def batch_indices(step: int, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> list[int]:
    """Dataset indices of ``rank``'s batch at global ``step``."""
    per_step = batch_size * world_size
    start = step * per_step + rank * batch_size
    out = []
    for position in range(start, start + batch_size):
        epoch, offset = divmod(position, n)
        out.append(int(_epoch_order(n, seed, epoch)[offset]))
    return out


@lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


class StepBatchSampler(Sampler[list[int]]):
    """Yields the batches of steps ``start_step .. end_step - 1`` for one rank."""

    def __init__(self, n: int, batch_size: int, start_step: int, end_step: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.end_step = start_step, end_step
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def __iter__(self):
        for step in range(self.start_step, self.end_step):
            yield batch_indices(step, self.n, self.batch_size, self.seed, self.rank, self.world_size)
