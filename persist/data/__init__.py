"""Data: the Pipeline protocol and what every pipeline shares (base), the datasets and their storage, augmentation,
loader settings, and the pipelines themselves (pipelines/, built through one registry)."""

from persist.data.base import Batch, ImageData, Pipeline, batch_indices, epoch_order, loads_per_epoch
from persist.data.datasets import load_dataset
from persist.errors import DataError

__all__ = [
    "Batch",
    "DataError",
    "ImageData",
    "Pipeline",
    "batch_indices",
    "epoch_order",
    "load_dataset",
    "loads_per_epoch",
]
