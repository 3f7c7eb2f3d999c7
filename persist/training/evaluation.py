"""Evaluation: mean per-example loss and top-1 accuracy over a test set, accumulated on the device."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n: int
) -> tuple[float, float]:
    """(test loss, test accuracy) of `model` over `batches` (n samples in all), with one host sync at the end."""
    model.eval()
    loss_sum, correct = None, None
    for x, y in batches:
        logits = model(x)
        loss = F.cross_entropy(logits, y, reduction="sum")
        hits = (logits.argmax(dim=1) == y).sum()
        loss_sum, correct = (loss, hits) if loss_sum is None else (loss_sum + loss, correct + hits)
    return loss_sum.item() / n, correct.item() / n  # deliberate sync: the results


def counted(batches, total: int, on_batch: Callable[[int, int], None]):
    """The batches, calling on_batch(images so far, total) as each is taken (queued on a GPU, done on a CPU)."""
    done = 0
    for x, y in batches:
        on_batch(done, total)
        yield x, y
        done += len(y)
    on_batch(done, total)
