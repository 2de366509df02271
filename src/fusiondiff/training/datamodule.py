"""LightningDataModule: train/val datasets, split and loaders."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset


class FusionDataModule(L.LightningDataModule):
    """Wraps a training dataset and a validation dataset (or a held-out split of the training data).

    Args:
        train: a dataset, or a callable ``(augment: bool) -> Dataset`` (Hydra ``_partial_``).
        val: a validation dataset (or callable); None splits ``val_fraction`` off ``train``
            (a fixed-seed split; the validation part is built without augmentation).
        val_fraction: share of the training samples held out when ``val`` is None.
        batch_size, val_batch_size, num_workers: loader settings.
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
    ) -> None:
        super().__init__()
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

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(dataset) >= batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_set is None else self._loader(self.val_set, self.val_batch_size, shuffle=False)
