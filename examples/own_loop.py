"""A plain PyTorch training loop (a torchvision model, a DataLoader over scikit-learn's digits), measured with
persist in a few added lines, each marked `# persist`. Three runs of the same loop, then the forecast and the report:

    python examples/own_loop.py --out runs/own/real-k1                  # the loop as it is
    python examples/own_loop.py --out runs/own/replay-k1 --replay 4     # ideal loading: 4 batches held, replayed
    python examples/own_loop.py --out runs/own/real-k2 --k 2            # each batch used twice (linear lr)
    persist whatif runs/own/real-k1 --replay runs/own/replay-k1 --persistencies 1,2,4
    persist report runs/own/real-k1 runs/own/replay-k1 runs/own/real-k2 --out runs/own/report

Small defaults (512 training images, 2 epochs) run in seconds on a CPU; --load-ms plants a slow read per sample.
Needs torchvision and scikit-learn (pip install 'persist[dev]').
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, Dataset

import persist

TEST_SIZE = 297  # the digits set has 1,797 images: the first 297 of a fixed shuffle are the test set


class Digits(Dataset):
    """scikit-learn's 8x8 digits as 3x8x8 float images; `load_ms` sleeps in every __getitem__ (slow storage)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, load_ms: float = 0.0):
        self.images, self.labels, self.load_s = images, labels, load_ms / 1000

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if self.load_s:
            time.sleep(self.load_s)
        return self.images[i], self.labels[i]


def digits(train_size: int, load_ms: float = 0.0) -> tuple[Digits, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).div(16).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(data.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    test, train = order[:TEST_SIZE], order[TEST_SIZE : TEST_SIZE + train_size]
    return Digits(images[train], labels[train], load_ms), (images[test], labels[test])


@torch.no_grad()
def evaluate(model: torch.nn.Module, test: tuple[torch.Tensor, torch.Tensor], device: torch.device):
    model.eval()
    x, y = (t.to(device) for t in test)
    logits = model(x)
    model.train()
    return (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


def setup(args: argparse.Namespace):
    """The model, its optimizer, the loader (replayed with --replay) and the test set, on args.device."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train_set, test = digits(args.train_size, args.load_ms)
    loader = DataLoader(  # pinned host memory: the copy to a GPU is then queued without the host waiting for it
        train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
        pin_memory=device.type == "cuda",
    )  # fmt: skip
    model = getattr(torchvision.models, args.model)(num_classes=10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    if args.replay:
        loader = persist.replay(loader, batches=args.replay, device=device)  # persist: ideal loading
    return model, optimizer, loader, test, device


def train_epoch(meter, epoch, model, optimizer, loader, device, args) -> None:
    """One epoch of the plain loop; the lines marked `# persist` are all that measuring it takes."""
    with meter.epoch(epoch):  # persist
        # persist: each use's step at the optimizer's lr times use.lr_factor; the scheduler's lr is back after each step
        for (x, y), use in persist.reuse(meter.timed(loader), k=args.k, schedule=args.schedule, optimizer=optimizer):
            if use.k == 1:  # a new batch: one copy feeds its K uses, outside the step (loading, not compute)
                inputs, targets = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with meter.step(samples=len(y)) as step:  # persist
                loss = F.cross_entropy(model(inputs), targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step.loss(loss)  # persist: summed on the device, no sync


def describe(args: argparse.Namespace, loader) -> dict:
    """The run as persist's report groups it (RunConfig names), with the example's own settings beside them."""
    return {
        "dataset": "digits", "model": f"torchvision:{args.model}", "batch_size": args.batch_size, "lr": args.lr,
        "momentum": 0.9, "seed": args.seed, "train_size": len(loader) * args.batch_size, "test_size": TEST_SIZE,
        "num_workers": args.workers, "load_ms": args.load_ms,
    }  # fmt: skip


def train(args: argparse.Namespace) -> None:
    model, optimizer, loader, test, device = setup(args)
    meter = persist.Meter(args.out, device=device, config=describe(args, loader))  # persist
    meter.evaluate(*evaluate(model, test, device))  # persist: the curve's origin, before any step
    for epoch in range(1, args.epochs + 1):
        train_epoch(meter, epoch, model, optimizer, loader, device, args)
        test_acc, test_loss = evaluate(model, test, device)
        meter.evaluate(test_acc=test_acc, test_loss=test_loss)  # persist
    meter.close()  # persist


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the run folder (new)")
    p.add_argument("--k", type=int, default=1, help="uses of each batch (default 1)")
    p.add_argument("--schedule", default="linear", help="lr schedule over the K uses (default linear: k x lr)")
    p.add_argument("--replay", type=int, default=0, help="replay the loader's first N batches (default 0: real)")
    p.add_argument("--model", default="resnet18", help="a torchvision classification model (default resnet18)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-size", type=int, default=512, help="training images (of 1,500)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0: loads on demand)")
    p.add_argument("--load-ms", type=float, default=0.0, help="a planted sleep per sample, in ms (slow storage)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


if __name__ == "__main__":
    train(parse())
