"""Image IO, datasets (paired folders, synthetic multi-focus) and the DataModule."""

from fusiondiff.data.datasets import PairedFolderDataset, SyntheticMultiFocus, load_sources
from fusiondiff.data.io import ImageError, read_image, write_image
from fusiondiff.data.pairing import Sample, find_samples

__all__ = [
    "ImageError",
    "PairedFolderDataset",
    "Sample",
    "SyntheticMultiFocus",
    "find_samples",
    "load_sources",
    "read_image",
    "write_image",
]
