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


def train_loader(dataset, sampler: EpochSampler, batch_size: int, workers: int, group_batches: int = 1):
    """Training batches in the sampler's order; drop_last keeps BatchNorm away from batches of 1.

    ``group_batches`` > 1: the loader reads pools of ``group_batches x batch_size`` samples in the
    sampler's order and splits each pool, sorted by the aspect ratio of its augmented images,
    into batches (:func:`aspect_sorted_batches`). A batch is padded to its largest image, and
    random batches of digit photos (64 px tall, 64-224 px wide) are more than half padding;
    sorted pools of 8 batches cut that to about a fifth (docs/results.md "Speed"). Every process sorts
    its pool the same way, so under torchrun the ranks' batches of a step cost about the same.
    A sampler ``skip`` inside a pool (a resumed run) reads the whole pool again and drops the
    batches already done, so the batches are those an uninterrupted run makes.

    The loader gets its own generator: otherwise creating its iterator draws from the global
    RNG, and a resumed run would draw at another moment than the run it continues.
    """
    g = torch.Generator().manual_seed(sampler.seed * 100003 + sampler.epoch)
    per_rank = len(sampler) + sampler.skip
    drop_last = per_rank > batch_size
    if group_batches <= 1:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          collate_fn=collate, drop_last=drop_last, generator=g,
                          persistent_workers=False, pin_memory=torch.cuda.is_available())
    pool = batch_size * group_batches
    done = sampler.skip // batch_size  # batches of this epoch already trained
    sampler.set_epoch(sampler.epoch, skip=(done // group_batches) * pool)
    pools = DataLoader(dataset, batch_size=pool, sampler=sampler, num_workers=workers, collate_fn=list,
                       drop_last=False, generator=g, persistent_workers=False,
                       pin_memory=torch.cuda.is_available())
    total = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
    return _PooledBatches(pools, batch_size, drop_last, done % group_batches, total - done)


class _PooledBatches:
    """Batches cut from a loader of pools (see :func:`train_loader`); ``len`` is the batch count."""

    def __init__(self, pools: DataLoader, batch_size: int, drop_last: bool, drop_first: int, n: int):
        self.pools, self.batch_size, self.drop_last = pools, batch_size, drop_last
        self.drop_first, self.n = drop_first, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        skip = self.drop_first
        for samples in self.pools:
            for batch in aspect_sorted_batches(samples, self.batch_size, self.drop_last):
                if skip:
                    skip -= 1
                    continue
                yield collate(batch)


def aspect_sorted_batches(samples: list, batch_size: int, drop_last: bool) -> list[list]:
    """(image, target) samples sorted by the image's width / height (ties keep their order), cut into
    batches of ``batch_size``; ``drop_last`` drops a short last batch."""
    order = sorted(range(len(samples)), key=lambda i: samples[i][0].shape[-1] / samples[i][0].shape[-2])
    batches = [[samples[i] for i in order[j:j + batch_size]] for j in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


# A batch of photos holds at most this many pixels (with ``pixels`` given): 32 VGA photos, 118 MB
# as float tensors. 32 phone photos of 12 MP would be 4.7 GB, before the loader's prefetching.
MAX_BATCH_PIXELS = 32 * 640 * 480


def shape_grouped_batches(aspect_ratios: list[float], batch_size: int, pixels: list[int] | None = None,
                          max_pixels: int = MAX_BATCH_PIXELS) -> list[list[int]]:
    """Batches of indices with similar aspect ratio, so padding to the batch's largest image
    wastes little compute; results are keyed by image id, so order does not matter. With
    ``pixels`` (each image's width x height), a batch also ends before it would pass
    ``max_pixels`` (a larger image has a batch of its own)."""
    order = np.argsort(np.asarray(aspect_ratios), kind="stable").tolist()
    batches, batch, total = [], [], 0
    for i in order:
        size = pixels[i] if pixels is not None else 0
        if batch and (len(batch) == batch_size or total + size > max_pixels):
            batches.append(batch)
            batch, total = [], 0
        batch.append(i)
        total += size
    return batches + [batch] if batch else batches


def inference_loader(dataset, aspect_ratios: list[float] | None, batch_size: int, workers: int,
                     pixels: list[int] | None = None) -> DataLoader:
    """Batches of ``dataset`` in its order, or grouped by ``aspect_ratios`` (and bounded by
    ``pixels``, each image's width x height) as :func:`shape_grouped_batches` cuts them."""
    if aspect_ratios is None:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    return DataLoader(dataset, batch_sampler=shape_grouped_batches(aspect_ratios, batch_size, pixels),
                      num_workers=workers, collate_fn=collate)
