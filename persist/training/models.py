"""Models: the paper's reduced AlexNet (the default), every torchvision classification model, and a user's own.

`--model paper-alexnet | torchvision:NAME | module:factory` (persist.registry.MODELS). A torchvision model is built
with random weights (no download) and the dataset's class count; a plug-in factory is called as
factory(num_classes=int, image_shape=(C, H, W)) and must return a torch.nn.Module. Weights are always drawn from the
run's seed on the CPU, then moved, so CPU and GPU runs start from the same point.

The paper's reduced AlexNet (Fischetti et al., Section 2.1):

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
  within 20-55 steps); see docs/paper-regime.md and reports/paper-stability.
`width` scales every channel count and the hidden layer (1.0 is the paper's model, about 3.5 M parameters); it
applies to this model alone.
"""

from __future__ import annotations

import torch
from torch import nn

from persist.errors import PluginError
from persist.registry import MODELS, plugin_call

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


def paper_alexnet(num_classes: int = 10, image_shape: tuple[int, int, int] = (3, 32, 32), width: float = 1.0):
    """The registry's factory for the paper's model (the only one that takes `width`)."""
    return reduced_alexnet(width, num_classes, image_shape[1])


def torchvision_factory(name: str):
    """`torchvision:NAME`: a factory for a torchvision classification model with random weights."""
    import torchvision.models

    known = torchvision.models.list_models(module=torchvision.models)  # classification only, not detection etc.
    if name not in known:
        close = [k for k in known if name.lower()[:4] in k][:5]
        raise PluginError(
            f"--model torchvision:{name}: torchvision has no classification model {name!r}"
            + (f" (close: {', '.join(close)})" if close else "")
            + "; see torchvision.models.list_models()"
        )

    def factory(num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)

    return factory


def make_model(
    name: str, num_classes: int, image_shape: tuple[int, int, int], seed: int, device: torch.device, width: float = 1.0
) -> nn.Module:
    """The model `name` with weights drawn from `seed` on the CPU, so CPU and GPU runs start from the same point."""
    factory = MODELS.get(name)
    torch.manual_seed(seed)
    kwargs = {"width": width} if name == "paper-alexnet" else {}
    target = MODELS.entries.get(name)
    if (isinstance(target, str) and target.startswith("persist.")) or name.startswith("torchvision:"):
        model = factory(num_classes=num_classes, image_shape=tuple(image_shape), **kwargs)
    else:  # the user's code: whatever it raises is one line naming it and the call
        call = f"{getattr(factory, '__name__', 'factory')}(num_classes={num_classes}, image_shape={tuple(image_shape)})"
        model = plugin_call(f"--model {name}", call, factory, num_classes=num_classes, image_shape=tuple(image_shape))
    if not isinstance(model, nn.Module):
        raise PluginError(f"--model {name}: the factory returned a {type(model).__name__}, expected a torch.nn.Module")
    return model.to(device)
