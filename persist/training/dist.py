"""Several processes through PyTorch's own engine: torchrun sets the environment, torch.distributed does the rest.

    torchrun --nproc-per-node N -m persist train --batch-size 64 ...   # m is per rank; the global batch is m*N

One process per rank. NCCL when the run is on CUDA (rank r on cuda:LOCAL_RANK), gloo on the CPU. Every collective has
a timeout, so a rank that dies or hangs takes the job down instead of leaving the others waiting forever. Rank 0 alone
touches the run folder; what it decides (or the error it hit) is broadcast so that every rank acts on it.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as torch_dist

from persist.config import RunConfig
from persist.errors import ConfigError, PersistError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend}

    def on_main(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0 only and hand its result, or its PersistError, to every rank."""
        if not self.enabled:
            return work()
        box: list = [None]
        if self.is_main:
            try:
                box[0] = ("ok", work())
            except PersistError as error:
                box[0] = ("error", str(error))
        torch_dist.broadcast_object_list(box, src=0)
        kind, payload = box[0]
        if kind == "error":
            raise PersistError(payload)
        return payload

    def gather(self, value):
        """Every rank's `value`, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values = [None] * self.world_size
        torch_dist.all_gather_object(values, value)
        return values

    def check_same_config(self, config: RunConfig) -> None:
        """Every rank must run the same config. All ranks see all configs, so all raise the same error."""
        configs = self.gather(config.as_dict())
        for rank, other in enumerate(configs[1:], start=1):
            differ = [k for k, v in configs[0].items() if other.get(k) != v]
            if differ:
                raise ConfigError(f"rank {rank}'s config differs from rank 0's in {', '.join(differ)}")

    def check_fits(self, config: RunConfig, n: int) -> None:
        """Can this config run on n training samples over this many ranks?"""
        world = self.world_size
        if config.batch_size * world > n:
            raise ConfigError(
                f"batch_size={config.batch_size} is not allowed: the training set has {n} samples"
                + (f", fewer than one global batch of {config.batch_size} x {world} ranks" if world > 1 else "")
            )
        if config.adaptive and self.enabled:
            raise ConfigError(
                "persistency=auto is not allowed under torchrun: each rank would choose its own number of steps, and "
                "DDP needs the same on every rank; use a fixed K"
            )
        if config.budget_s is not None and self.enabled:
            raise ConfigError(
                f"budget_s={config.budget_s} is not allowed under torchrun: each rank's clock would decide on its own "
                "when to stop; use a sample-steps budget, which every rank counts alike"
            )

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DDP around `model` when there are several ranks: it all-reduces gradients at every backward."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        return tensor

    def rank_timings(self, data_wait_s: float, compute_s: float) -> dict:
        """Max and mean over ranks of data wait and compute: the slowest rank sets the pace."""
        if not self.enabled:
            return {}
        waits, computes = zip(*self.gather((data_wait_s, compute_s)), strict=True)
        return {
            **self.describe(),
            "data_wait_s_max": max(waits),
            "data_wait_s_mean": sum(waits) / len(waits),
            "compute_s_max": max(computes),
            "compute_s_mean": sum(computes) / len(computes),
        }

    def epoch_summary(self, data_wait_s: float, compute_s: float, model: torch.nn.Module, device) -> dict:
        """An epoch's `dist` field: per-rank timings and one un-overlapped all-reduce of the gradients (empty alone)."""
        if not self.enabled:
            return {}
        numel = sum(p.numel() for p in model.parameters())
        return {**self.rank_timings(data_wait_s, compute_s), "allreduce_probe_s": self.allreduce_probe_s(numel, device)}

    def allreduce_probe_s(self, numel: int, device: torch.device, repeats: int = 5) -> float | None:
        """Seconds for one all-reduce of a gradient-sized float32 buffer, outside training (median of `repeats`).

        DDP overlaps its bucketed all-reduces with backward, so their cost inside a step cannot be read off the
        step's time; this probe gives what one un-overlapped all-reduce of all gradients costs on this fabric."""
        if not self.enabled:
            return None
        import time

        buffer = torch.ones(numel, device=device)
        times = []
        for _ in range(repeats + 1):
            torch_dist.barrier()
            start = time.perf_counter()
            torch_dist.all_reduce(buffer)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # deliberate sync: the probe's end
            times.append(time.perf_counter() - start)
        return sorted(times[1:])[repeats // 2]

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def close(self, clean: bool = True) -> None:
        """After a clean run: wait for every rank, then tear the group down together (a rank that exits while
        another is still communicating can abort in gloo's threads). After a failure: leave the group alone,
        since a destroy can deadlock against ranks stuck in a collective; torchrun ends the job."""
        if self.enabled and torch_dist.is_initialized() and clean:
            # DDP sits in reference cycles, so dropping it frees nothing until a collection. Freed after the
            # group is gone (at interpreter exit), its reducer aborts the process ("terminate called without an
            # active exception"): 2 of 40 two-rank gloo runs without this collect, 0 of 40 with it (torch 2.14).
            gc.collect()
            torch_dist.barrier()
            torch_dist.destroy_process_group()


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """The command line that runs `persist train` on `nproc` local ranks (torchrun's module form, same Python)."""
    import sys

    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "persist",
        "train",
        *train_args,
    ]


def init_options(device_id: torch.device | None) -> dict:
    """init_process_group's keyword arguments beyond the backend: `device_id` on CUDA, nothing on gloo."""
    return {} if device_id is None else {"device_id": device_id}


def from_environment(device_spec: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """A DistContext for this process: single when torchrun did not start it, else an initialized process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    on_cuda = device_spec.startswith("cuda") or (device_spec == "auto" and torch.cuda.is_available())
    backend = "nccl" if on_cuda else "gloo"
    device_id = None
    if on_cuda:
        torch.cuda.set_device(local_rank)
        device_id = torch.device("cuda", local_rank)  # NCCL binds this rank's communicator (its barrier warns without)
    torch_dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **init_options(device_id))
    return DistContext(rank, world_size, local_rank, backend)
