"""Measure the image-folder pipelines on one folder: loading img/s per pipeline (one epoch, no model) and the pixel gap
between pipelines on the same windows (every pipeline's batches against torchvision's, which cuts exactly the
reference windows with v2.functional.resized_crop).

    PYTHONPATH=. python scripts/folder-pipelines.py DIR --image-size 224 -m 32 [--device cpu] [--train-size N]

Prints one line per pipeline: img/s, then the mean and largest absolute difference from torchvision's batches in
pixel levels (0..255) and in standardized units (levels / (255 x the folder's channel std)).
"""

from __future__ import annotations

import argparse
import time

import torch

from persist.config import RunConfig
from persist.data import load_dataset
from persist.data.pipelines import make_pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("-m", "--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-size", type=int)
    parser.add_argument("--pipelines", default="torchvision,dali,preloaded")
    args = parser.parse_args()
    base = RunConfig(
        dataset="imagefolder",
        data_root=args.folder,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=args.device,
        train_size=args.train_size,
    )
    data = load_dataset(base)
    device = torch.device(args.device)
    std = torch.tensor(data.channel_std).view(1, 3, 1, 1) * 255
    pixels = {}
    for name in args.pipelines.split(","):
        config = RunConfig(**{**base.as_dict(), "pipeline": name})
        start = time.perf_counter()
        pipeline = make_pipeline(config, data, device)
        setup_s = time.perf_counter() - start
        start = time.perf_counter()
        batches = [x.cpu() * 255 for x, _ in pipeline.epoch(1)]  # unit normalization: x = pixel / 255
        epoch_s = time.perf_counter() - start
        pipeline.close()
        pixels[name] = torch.cat(batches)
        n = len(pixels[name])
        line = f"{name:12s} {n / epoch_s:8.1f} img/s per epoch ({n} images, setup {setup_s:.1f} s)"
        if name != "torchvision" and "torchvision" in pixels:
            gap = (pixels[name] - pixels["torchvision"]).abs()
            line += (
                f"; vs torchvision: mean {gap.mean():.2f} levels, max {gap.max():.0f} levels; standardized mean "
                f"{(gap / std).mean():.3f}, max {(gap / std).max():.2f}"
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()
