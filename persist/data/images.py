"""uint8 images on the device, normalized one gathered batch at a time: the preloaded pipeline's training set and
every run's test split (evaluation reads it in stored order)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from persist.data.augment import CropFlip, crop_flip
from persist.data.base import Batch, ImageData, Normalizer


class DeviceImages:
    """uint8 images and labels on the device, normalized one gathered batch at a time."""

    def __init__(self, images_hwc: torch.Tensor, labels: torch.Tensor, data: ImageData, device: torch.device):
        # NCHW once, here, so that every batch is a contiguous gather with no permute.
        self.images = images_hwc.permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = labels.to(device)
        self.normalize = Normalizer(data, device)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor, augment: CropFlip | None = None) -> Batch:
        images = self.images.index_select(0, index)
        if augment is not None:  # on the uint8 pixels, before normalizing, as the other pipelines do it
            images = crop_flip(images, augment)
        return self.normalize(images), self.labels.index_select(0, index)

    def in_order(self, batch_size: int) -> Iterator[Batch]:
        """Every sample once, in stored order, the last batch possibly short (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.normalize(self.images[start : start + batch_size]), self.labels[start : start + batch_size]
