"""LightningDataModule: train/val datasets, split and loaders, with a training data stream that resumes exactly.

The training order is a pure function of (seed, epoch): :class:`EpochShuffle` draws each epoch's permutation
from its own generator, and every sample is loaded with torch's global RNG seeded by (seed, epoch, index) and
restored afterwards (:class:`EpochSeeded`), so its random draws (crops, flips, generated blur) repeat exactly
and never move the RNG stream of the training step's noise. A run resumed mid-epoch skips the batches it
already trained on, so it sees exactly the batches the uninterrupted run sees (Lightning prefetches a batch
ahead; with the global RNG in the data, that prefetch alone made resumed runs differ).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset


def _mix(*numbers: int) -> int:
    """One 63-bit seed from several integers (splitmix-style, so (1, 2) and (2, 1) differ)."""
    h = 0x9E3779B97F4A7C15
    for n in numbers:
        h = ((h ^ (int(n) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class EpochShuffle(Sampler):
    """A shuffling sampler whose order depends only on (seed, epoch) and which yields ``(epoch, index)`` keys
    for :class:`EpochSeeded`. Lightning calls :meth:`set_epoch` at every epoch start; ``skip`` leaves out the
    first samples of the next pass once (a run resumed mid-epoch)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch, self.skip = size, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(_mix(self.seed, self.epoch))).tolist()
        skip, self.skip = self.skip, 0
        return iter([(self.epoch, i) for i in order[skip:]])


class EpochSeeded(Dataset):
    """``dataset[index]`` with torch's global RNG seeded by (seed, epoch, index) for the duration of the call
    and restored afterwards: a sample's random draws repeat exactly for the same key, whichever process or
    worker loads it and whatever happened before."""

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.seed, epoch, index))
            return self.dataset[index]


class ResumableLoader(DataLoader):
    """The training loader. Its position lives in the trainer's own progress counters (see
    :meth:`FusionDataModule.train_dataloader`), so its state is only the seed, which must match on resume."""

    def state_dict(self) -> dict[str, int]:
        return {"shuffle_seed": self.sampler.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("shuffle_seed", self.sampler.seed) != self.sampler.seed:
            from fusiondiff.errors import ConfigError

            raise ConfigError(
                f"this checkpoint was trained with seed={state['shuffle_seed']}, this run has seed={self.sampler.seed}; "
                "resume with the same seed (or start a new run)"
            )


class FusionDataModule(L.LightningDataModule):
    """Wraps a training dataset and a validation dataset (or a held-out split of the training data).

    Args:
        train: a dataset, or a callable ``(augment: bool) -> Dataset`` (Hydra ``_partial_``).
        val: a validation dataset (or callable); None splits ``val_fraction`` off ``train``
            (a fixed-seed split; the validation part is built without augmentation).
        val_fraction: share of the training samples held out when ``val`` is None.
        batch_size, val_batch_size, num_workers: loader settings.
        seed: the training order and every sample's random draws derive from it (the run's ``seed``).
        collate: the training batches' collate function (e.g. :class:`fusiondiff.data.layered.StackBatches`
            for N-frame stacks); None: PyTorch's default.
    """

    def __init__(
        self,
        train: Dataset | Callable[..., Dataset],
        val: Dataset | Callable[..., Dataset] | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 8,
        val_batch_size: int = 4,
        num_workers: int = 0,
        split_seed: int = 0,
        seed: int = 0,
        collate: Callable[[list], Any] | None = None,
    ) -> None:
        super().__init__()
        self.seed, self.collate = seed, collate
        self._train, self._val = train, val
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.batch_size, self.val_batch_size, self.num_workers = batch_size, val_batch_size, num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    @staticmethod
    def _build(spec, augment: bool) -> Dataset:
        return spec(augment=augment) if callable(spec) and not isinstance(spec, Dataset) else spec

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self._val is not None:
            self.train_set = self._build(self._train, True)
            self.val_set = self._build(self._val, False)
            return
        full_train, full_val = self._build(self._train, True), self._build(self._train, False)
        n = len(full_train)
        n_val = max(1, round(n * self.val_fraction)) if n > 1 else 0
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        self.train_set = Subset(full_train, order[n_val:]) if n_val else full_train
        self.val_set = Subset(full_val, order[:n_val]) if n_val else None

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffle(len(self.train_set), self.seed)
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.fit_loop.restarting:  # resumed mid-epoch: skip what was trained on
            done, per_epoch = trainer.fit_loop.epoch_loop.batch_progress.current.ready, len(self.train_set) // self.batch_size
            sampler.skip = done * self.batch_size if done < per_epoch else 0  # (a checkpoint at an epoch's last batch)
        return ResumableLoader(
            EpochSeeded(self.train_set, self.seed),
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=len(self.train_set) >= self.batch_size,
            collate_fn=self.collate,
            generator=torch.Generator().manual_seed(self.seed),  # worker seeds without touching the global RNG
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(
            self.val_set, batch_size=self.val_batch_size, shuffle=False, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, generator=torch.Generator().manual_seed(self.seed),
        )  # fmt: skip
