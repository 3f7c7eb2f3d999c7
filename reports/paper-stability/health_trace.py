"""The health of one stability cell every 5 steps: when does a network die?

    OMP_NUM_THREADS=2 python reports/paper-stability/health_trace.py linear 36 health-trace-seed0.jsonl

Trains the paper's model and hyperparameters (full width, mu = 0.001 on the summed gradient, momentum 0.5), m=512,
K=5, inputs in [0, 1], 4,096 default synthetic training images, seed 0, on the CPU, exactly as `persist stability`
does (through the same `Trainer.train_batch`), and every 5 steps reads `persist.runs.stability.health` on the current
batch (after the step) and each ReLU layer's fraction of outputs that are positive (`on`). One JSON line per reading;
`loss` is the step's own.
"""

import json
import sys

import torch

from persist.config import RunConfig
from persist.measure import NullClock
from persist.runs.stability import health
from persist.training.trainer import Trainer

schedule, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
config = RunConfig(
    dataset="synthetic", train_size=4096, test_size=256, width=1.0, device="cpu", normalization="unit",
    batch_size=512, persistency=5, lr_schedule=schedule,
)  # fmt: skip
trainer, done = Trainer(config), 0
relus = [m for m in trainer.model.modules() if isinstance(m, torch.nn.ReLU)]


def read(x: torch.Tensor) -> dict:
    on: list[float] = []
    hooks = [r.register_forward_hook(lambda m, i, o: on.append(round((o > 0).float().mean().item(), 4))) for r in relus]
    reading = health(trainer.model, x)  # its forward pass fills `on` too
    for hook in hooks:
        hook.remove()
    return {**reading, "on": on}


with open(out, "w") as f:

    def after_step(use, loss: torch.Tensor, x: torch.Tensor) -> bool:
        global done
        done += 1
        if done % 5 == 1:
            f.write(json.dumps({"step": done, "loss": loss.item() / 512, **read(x)}) + "\n")
            f.flush()
        return done == steps

    for epoch in range(1, 1_000):
        for load, (x, y) in enumerate(trainer.pipeline.epoch(epoch)):
            loss_sum = torch.zeros(())
            trainer.train_batch(
                x, y, epoch, load, loss_sum, clock=NullClock(), on_step=lambda u, v, x=x: after_step(u, v, x)
            )
            if done == steps:
                sys.exit(0)
