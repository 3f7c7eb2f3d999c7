"""uint8 images on the device, cut and normalized one gathered batch at a time: the preloaded pipeline's training set
(DeviceImages for arrays and JPEG storage, WindowedDeviceImages for an image folder) and every run's test split
(evaluation reads it in stored order)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torchvision.ops import roi_align

from persist.data.augment import CropFlip, crop_flip
from persist.data.base import Batch, ImageData, Normalizer
from persist.data.resized_crop import Windows


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


class WindowedDeviceImages:
    """An image folder on the device: every image stored once at P x P (uint8 NCHW), and a batch a gather and one
    `torchvision.ops.roi_align` over the whole batch, each sample's window mapped into the P x P coordinates:
    bilinear samples averaged over each output pixel's bin (adaptive sampling: an antialiased downscale, a bilinear
    upscale), rounded back to uint8, flipped, normalized."""

    def __init__(self, images_nchw: torch.Tensor, labels: torch.Tensor, data: ImageData, device: torch.device):
        self.images, self.labels, self.device = images_nchw, labels.to(device), device
        self.preload_size, self.image_size = images_nchw.shape[-1], data.image_size
        self.normalize = Normalizer(data, device)

    def __len__(self) -> int:
        return len(self.labels)

    def boxes(self, windows: Windows) -> torch.Tensor:
        """roi_align's boxes (batch position, x1, y1, x2, y2): each window in the P x P image's coordinates."""
        scale_y = self.preload_size / windows.image_hw[:, 0].double()
        scale_x = self.preload_size / windows.image_hw[:, 1].double()
        x1, y1 = windows.left * scale_x, windows.top * scale_y
        x2, y2 = (windows.left + windows.width) * scale_x, (windows.top + windows.height) * scale_y
        position = torch.arange(len(windows), dtype=torch.float64)
        return torch.stack([position, x1, y1, x2, y2], dim=1).float()

    def batch(self, index: torch.Tensor, windows: Windows) -> Batch:
        """Gather, cut every window to S x S in one roi_align, back to uint8, flip, normalize: all on the device."""
        boxes = self.boxes(windows).to(self.device, non_blocking=True)
        images = self.images.index_select(0, index).float()
        # aligned=True: pixel i covers [i, i+1), as in resized_crop; sampling_ratio=-1: ceil(bin size) samples per bin
        out = roi_align(images, boxes, output_size=self.image_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
        flip = windows.flip.to(self.device, non_blocking=True)[:, None, None, None]
        return self.normalize(torch.where(flip, out.flip(-1), out)), self.labels[index]
