"""The sample order of training: reproducible per seed and epoch, sharded over processes, resumable."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """The sample order of one epoch for one process.

    DistributedSampler's rule (a permutation from a generator seeded with seed + epoch; process r
    takes every world_size-th index from r) extended with what the loop needs: a fixed number of
    iterations (more than one pass chains further permutations, fewer takes a prefix) and a
    start offset, so that a run resumed mid-epoch continues with the very batches it would
    have drawn.
    """

    def __init__(self, n_samples: int, *, batch_size: int, iterations: int, seed: int, epoch: int,
                 rank: int = 0, world_size: int = 1, start_iteration: int = 0):
        self.n_samples, self.batch_size, self.iterations = n_samples, batch_size, iterations
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.start_iteration = start_iteration

    def global_order(self) -> list[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        needed = self.iterations * self.batch_size * self.world_size
        order: list[int] = []
        while len(order) < needed:
            order.extend(torch.randperm(self.n_samples, generator=generator).tolist())
        return order[:needed]

    def __iter__(self) -> Iterator[int]:
        mine = self.global_order()[self.rank::self.world_size]
        return iter(mine[self.start_iteration * self.batch_size:])

    def __len__(self) -> int:
        return (self.iterations - self.start_iteration) * self.batch_size
