"""DataLoaders: a seeded, resumable training order and shape-grouped inference batches."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from digitdet.data.coco import collate


class EpochSampler(Sampler):
    """A permutation of range(n) drawn from (seed, epoch), starting after ``skip`` samples.

    The order depends only on seed and epoch, so a run resumed mid-epoch (``skip`` = samples
    already seen) continues with exactly the samples an uninterrupted run would see. With
    ``num_replicas`` > 1 (distributed), rank r takes every num_replicas-th sample of the
    permutation (padded by wrapping so all ranks get as many).
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = -(-self.n // self.num_replicas)
        order += order[: per_rank * self.num_replicas - self.n]
        return order[self.rank::self.num_replicas]

    def __iter__(self):
        return iter(self._indices()[self.skip:])

    def __len__(self) -> int:
        return -(-self.n // self.num_replicas) - self.skip


def train_loader(dataset, sampler: EpochSampler, batch_size: int, workers: int) -> DataLoader:
    """Training batches in the sampler's order; drop_last keeps BatchNorm away from batches of 1.

    The loader gets its own generator: otherwise creating its iterator draws from the global
    RNG, and a resumed run would draw at another moment than the run it continues.
    """
    g = torch.Generator().manual_seed(sampler.seed * 100003 + sampler.epoch)
    per_rank = len(sampler) + sampler.skip
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate, drop_last=per_rank > batch_size, generator=g,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())


def shape_grouped_batches(aspect_ratios: list[float], batch_size: int) -> list[list[int]]:
    """Batches of indices with similar aspect ratio, so padding to the batch's largest image
    wastes little compute; results are keyed by image id, so order does not matter."""
    order = np.argsort(np.asarray(aspect_ratios), kind="stable").tolist()
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def inference_loader(dataset, aspect_ratios: list[float] | None, batch_size: int, workers: int) -> DataLoader:
    if aspect_ratios is None:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    return DataLoader(dataset, batch_sampler=shape_grouped_batches(aspect_ratios, batch_size),
                      num_workers=workers, collate_fn=collate)
