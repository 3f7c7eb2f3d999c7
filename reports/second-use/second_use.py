"""Is the second use of a batch cheaper than the first (still in cache)? And does that explain the summary's
forecast error for torchvision with 0 workers?

torchvision pipeline, 0 workers, m=32, smoke sizes (1,024 images, width 0.125): a K=1 trainer and a K=K trainer
train alternating epochs (side by side in time, so the machine's load hits both alike); every step is timed on
the host clock. Per pair of epochs (the first pair is warm-up): step of use 1 / steps of later uses at K, K=1 step /
later uses, data wait per load K / K=1, and the forecast of the K epoch from the K=1 epoch (old: loads x (epoch -
compute) / loads + steps x compute / step; new: persist.forecast, synchronous) against the measured wall_s.

    PYTHONPATH=. python reports/second-use/second_use.py K THREADS PAIRS
"""

import statistics
import sys
from dataclasses import replace

import torch

from persist.config import RunConfig, with_profile
from persist.data import load_dataset
from persist.forecast import Measured, epoch_s
from persist.training.trainer import Trainer

k, threads, pairs = (int(a) for a in sys.argv[1:4])
torch.set_num_threads(threads)
base = with_profile(RunConfig(pipeline="torchvision", num_workers=0, batch_size=32, device="cpu"), "smoke")
data = load_dataset(base)
one, many = Trainer(replace(base, persistency=1), data), Trainer(replace(base, persistency=k), data)


def step_times(trainer):
    return [end - start for start, end in zip(trainer.clock.starts, trainer.clock.ends, strict=True)]


rows = []
for epoch in range(1, pairs + 2):
    r1, s1 = one.train_epoch(epoch), None
    s1 = step_times(one)
    rk = many.train_epoch(epoch)
    sk = step_times(many)
    if epoch == 1:
        continue
    first, later = sk[0::k], [s for i, s in enumerate(sk) if i % k]
    old = r1["wall_s"] - r1["compute_s"] + k * r1["compute_s"]
    new = epoch_s(Measured(r1["wall_s"], r1["data_wait_s"], r1["compute_s"], r1["loads"], r1["steps"], "sync"), k)
    rows.append(
        {
            "use 1 / later uses (at K)": statistics.median(first) / statistics.median(later),
            "K=1 step / later uses": statistics.median(s1) / statistics.median(later),
            "wait per load K / K=1": (rk["data_wait_s"] / rk["loads"]) / (r1["data_wait_s"] / r1["loads"]),
            "old forecast / measured": old / rk["wall_s"],
            "new forecast / measured": new / rk["wall_s"],
        }
    )
print(f"K={k}, torch threads {torch.get_num_threads()}, {len(rows)} pairs; median over pairs [min, max]:")
for name in rows[0]:
    values = [r[name] for r in rows]
    print(f"  {name:26s} {statistics.median(values):.3f}  [{min(values):.3f}, {max(values):.3f}]")
