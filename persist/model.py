"""The paper's reduced AlexNet (Fischetti et al., Section 2.1).

Given by the paper: stride-1 convolutions with kernels 11, 5, 3, 3, 3 and 64, 192, 384, 256, 256 channels; 2x2 max
pooling with stride 2; 256 hidden units in the fully-connected part; no batch norm, no dropout.
Left open by the paper, chosen here as AlexNet does it:
- 'same' padding (k // 2), so only the pools shrink the 32x32 input;
- ReLU after every convolution and after the hidden layer;
- pools after conv1, conv2 and conv5: 32 -> 16 -> 8 -> 4;
- fully-connected part 256*4*4 = 4096 -> 256 -> 10;
- PyTorch's default initialization (uniform, bound 1/sqrt(fan_in)), the same in 2018's PyTorch 0.4;
- inputs scaled to [0, 1] (pixel/255, torchvision's ToTensor() alone, `--normalization unit`): the paper names no
  preprocessing. Per-channel standardization makes the paper's largest steps (m=512, K=5, mu=0.001 on a summed
  gradient) diverge within 20-30 steps. Under no scale does k*mu at m=512 survive every seed (it dies or goes NaN
  within 20-55 steps); see README ("Input scale") and reports/paper-stability.
`width` scales every channel count and the hidden layer (1.0 is the paper's model, about 3.5 M parameters).
"""

from __future__ import annotations

import torch
from torch import nn

KERNELS = (11, 5, 3, 3, 3)
CHANNELS = (64, 192, 384, 256, 256)
POOL_AFTER = (0, 1, 4)  # indices of the convolutions followed by a 2x2 max-pool
HIDDEN = 256


def reduced_alexnet(width: float = 1.0, num_classes: int = 10, image_size: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels, size = 3, image_size
    for i, (kernel, channels) in enumerate(zip(KERNELS, CHANNELS, strict=True)):
        out_channels = max(1, round(channels * width))
        layers += [nn.Conv2d(in_channels, out_channels, kernel, stride=1, padding=kernel // 2), nn.ReLU(inplace=True)]
        if i in POOL_AFTER:
            layers.append(nn.MaxPool2d(2, stride=2))
            size //= 2
        in_channels = out_channels
    hidden = max(1, round(HIDDEN * width))
    layers += [
        nn.Flatten(),
        nn.Linear(in_channels * size * size, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    ]
    return nn.Sequential(*layers)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_model(width: float, seed: int, device: torch.device) -> nn.Module:
    """The model with weights drawn from `seed` on the CPU, so CPU and GPU runs start from the same point."""
    torch.manual_seed(seed)
    return reduced_alexnet(width).to(device)
