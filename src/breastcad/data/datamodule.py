"""From a manifest and a split to batches: the decode cache read by memory map, one read per batch.

A batch is `(pixels, targets)`: pixels uint8 N x H x W x C straight from the cache (the network's
input adapter converts, normalises and broadcasts gray to 3 channels where a backbone needs it;
see `breastcad.models.inputs`), targets int64 class indices in `manifest.classes` order; with
lesion masks, training batches add them as a third element. Rows the cache could not decode
are left out and listed in `problems` with their file names.

Example:
    >>> dm = ImageDataModule(manifest, split["partition"], PreprocessConfig(size=50), batch_size=35)
    >>> dm.setup()  # doctest: +SKIP
    >>> x, y = next(iter(dm.train_dataloader()))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from breastcad.config import PreprocessConfig
from breastcad.data.cache import ImageCache
from breastcad.data.manifest import Manifest
from breastcad.errors import DataError

Sampling = Literal["none", "oversample", "undersample"]


class CachedImages(Dataset):
    """Rows `rows` of a cache with integer `targets`; `__getitems__` reads a batch in one go.
    With `masks` (one lesion mask per cache row, `breastcad.data.lesions`) a batch is
    `(pixels, targets, masks)`."""

    def __init__(
        self,
        cache: ImageCache,
        rows: np.ndarray,
        targets: np.ndarray,
        masks: np.ndarray | None = None,
    ) -> None:
        self.cache, self.rows, self.targets = cache, np.asarray(rows), np.asarray(targets)
        self.masks = masks

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(part[0] for part in self.__getitems__([i]))

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, ...]:
        idx = np.sort(np.asarray(indices))  # ascending rows: sequential reads from the map
        pixels = self.cache.pixels[self.rows[idx]]
        batch = (torch.from_numpy(pixels), torch.from_numpy(self.targets[idx]))
        if self.masks is None:
            return batch
        return (*batch, torch.from_numpy(self.masks[self.rows[idx]]))


def _as_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return batch  # `__getitems__` already returns the batch


class BalancedSampler(Sampler[int]):
    """Each epoch, every class drawn to the same count: the largest class's count with
    replacement ('oversample') or the smallest's without ('undersample'). Seeded per epoch."""

    def __init__(self, targets: np.ndarray, mode: Sampling, seed: int = 0) -> None:
        self.by_class = [np.flatnonzero(targets == c) for c in np.unique(targets)]
        counts = [len(rows) for rows in self.by_class]
        self.per_class = max(counts) if mode == "oversample" else min(counts)
        self.mode, self.seed, self.epoch = mode, seed, 0

    def __len__(self) -> int:
        return self.per_class * len(self.by_class)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        replace = self.mode == "oversample"
        drawn = [
            rng.choice(rows, self.per_class, replace=replace and len(rows) < self.per_class)
            for rows in self.by_class
        ]
        yield from rng.permutation(np.concatenate(drawn)).tolist()


class ImageDataModule(L.LightningDataModule):
    """Train/val/test loaders over the cache of `manifest`, partitioned by `partition`
    (one of 'train', 'val', 'test' or anything else to leave the row out, per manifest row)."""

    def __init__(
        self,
        manifest: Manifest,
        partition: Sequence[str] | np.ndarray,
        preprocess: PreprocessConfig,
        batch_size: int = 32,
        sampling: Sampling = "none",
        cache_dir: Path | None = None,
        jobs: int = 2,
        num_workers: int = 0,
        seed: int = 0,
        progress: bool = True,
        masks: np.ndarray | None = None,
        facts: bool = False,
    ) -> None:
        super().__init__()
        self.manifest, self.preprocess = manifest, preprocess
        self.partition = np.asarray(partition, dtype=object)
        if len(self.partition) != len(manifest):
            raise DataError(f"{len(self.partition)} partitions for {len(manifest)} manifest rows")
        self.batch_size, self.sampling, self.cache_dir = batch_size, sampling, cache_dir
        self.jobs, self.num_workers, self.seed, self.progress = jobs, num_workers, seed, progress
        if masks is not None and len(masks) != len(manifest):
            raise DataError(f"{len(masks)} lesion masks for {len(manifest)} manifest rows")
        self.masks = masks
        """Lesion masks per manifest row; training batches then carry them (validation and
        test batches never do: evaluation sees images only, as a user's images come)."""
        self.facts = facts
        """Whether the cache's build also records what an audit finds of each image (its
        hashes), where no audit decoded them before (`ImageCache.build`)."""
        self.cache: ImageCache | None = None
        self.datasets: dict[str, CachedImages] = {}

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def problems(self) -> list[str]:
        """'path: problem' for every row the cache could not decode (left out of all loaders)."""
        return [f"{p}: {msg}" for p, msg in (self.cache.problems if self.cache else {}).items()]

    def setup(self, stage: str | None = None) -> None:
        if self.cache is not None:
            return
        self.cache = ImageCache.build(
            self.manifest, self.preprocess, self.cache_dir, self.jobs, self.progress, self.facts
        )
        self._make_datasets()

    def _make_datasets(self) -> None:
        lookup = {c: i for i, c in enumerate(self.classes)}
        targets = self.manifest.frame["label"].map(lookup).to_numpy(dtype=np.int64)
        self.datasets = {}
        for name in ("train", "val", "test"):
            rows = np.flatnonzero((self.partition == name) & self.cache.readable)
            if len(rows):
                masks = self.masks if name == "train" else None
                self.datasets[name] = CachedImages(self.cache, rows, targets[rows], masks)

    def repartitioned(self, partition: Sequence[str] | np.ndarray) -> ImageDataModule:
        """The same images, cache and settings under another partition (a cross-fitting
        fold's); the cache is set up once, here if not yet."""
        self.setup()
        other = ImageDataModule(
            self.manifest,
            partition,
            self.preprocess,
            self.batch_size,
            self.sampling,
            self.cache_dir,
            self.jobs,
            self.num_workers,
            self.seed,
            self.progress,
            self.masks,
        )
        other.cache = self.cache
        other._make_datasets()
        return other

    def _loader(self, name: str, sampler: Sampler[int], training: bool = False) -> DataLoader:
        # batch norm cannot train on a batch of one image: a training epoch that would end
        # with one leaves it out (a different image each epoch; evaluation keeps every image)
        lone = training and len(sampler) > 1 and len(sampler) % self.batch_size == 1
        batches = BatchSampler(sampler, self.batch_size, drop_last=lone)
        return DataLoader(
            self.datasets[name],
            batch_sampler=batches,
            collate_fn=_as_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        data = self.datasets["train"]
        if self.sampling == "none":
            generator = torch.Generator().manual_seed(self.seed)
            sampler: Sampler[int] = torch.utils.data.RandomSampler(data, generator=generator)
        else:
            sampler = BalancedSampler(data.targets, self.sampling, self.seed)
        return self._loader("train", sampler, training=True)

    def ordered_dataloader(self, name: str) -> DataLoader | list:
        """Partition `name` in manifest order, once each (no sampling); an empty list (no
        loop) when the partition is absent."""
        if name not in self.datasets:
            return []
        return self._loader(name, torch.utils.data.SequentialSampler(self.datasets[name]))

    def val_dataloader(self) -> DataLoader | list:
        return self.ordered_dataloader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self.ordered_dataloader("test")

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each loaded partition."""
        return {
            name: {c: int((ds.targets == i).sum()) for i, c in enumerate(self.classes)}
            for name, ds in self.datasets.items()
        }
