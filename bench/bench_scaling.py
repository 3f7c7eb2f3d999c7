"""Scaling across ranks with torchrun: 1 and 2 ranks per pipeline and K (gloo on the CPU, NCCL on GPUs).

Weak scaling: every rank keeps its own m, so 2 ranks process twice the samples per step. Efficiency is
img/s(2 ranks) / (2 x img/s(1 rank)), from the epochs' own wall_s (epoch 1 is the warm-up and is left out).
The benchmark's timer measures the whole 2-rank torchrun job, start-up included; the figures to read are in extra_info.
"""

from __future__ import annotations

import os
import statistics
import subprocess

import pytest
import torch

from persist.benchjson import schema
from persist.records import read_manifest, read_records
from persist.training.dist import torchrun_command

RANKS = 2
EPOCHS = 4
PER_RANK_BATCH = 64


def torchrun_args(base, pipeline: str, k: int, out) -> list[str]:
    """`persist train` arguments for one scaling job: the bench's dataset, sizes, storage and augmentation."""
    args = [
        "--pipeline",
        pipeline,
        "-m",
        str(PER_RANK_BATCH),
        "-K",
        str(k),
        "--epochs",
        str(EPOCHS),
        "--quiet",
        "--dataset",
        base.dataset,
        "--train-size",
        str(base.train_size),
        "--test-size",
        str(base.test_size),
        "--width",
        str(base.width),
        # --persist-storage and --persist-augment reach the jobs too: a JPEG or augmented bench scales what it times
        "--storage",
        base.storage,
        "--augment",
        base.augment,
        "--reuse",
        base.reuse,
        "--device",
        "cuda" if base.device.startswith("cuda") else "cpu",
        "--out",
        str(out),
    ]
    if base.data_root:
        args += ["--data-root", base.data_root]
    return args


def _torchrun(tmp_path, setup, pipeline: str, k: int, nproc: int) -> list:
    out = tmp_path / f"{pipeline}-K{k}-ranks{nproc}"
    args = torchrun_args(setup.base, pipeline, k, out)
    threads = max(1, (os.cpu_count() or 1) // RANKS)  # the same threads per rank at 1 and 2 ranks: a fair baseline
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = torchrun_command(nproc, args)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return read_records(out)


def _img_per_s(records) -> float:
    timed = records[1:]  # epoch 1 warms up
    return statistics.median(r.fresh_samples / r.wall_s for r in timed)


@pytest.mark.parametrize("k", [1, 5], ids=["K1", "K5"])
def bench_scaling(benchmark, setup, pipeline, k, tmp_path):
    if setup.device.type == "cuda" and torch.cuda.device_count() < RANKS:
        pytest.skip(f"scaling needs {RANKS} GPUs for NCCL; this machine has {torch.cuda.device_count()}")
    one = _torchrun(tmp_path, setup, pipeline, k, 1)
    runs = {}
    benchmark.group = "scaling (torchrun job, start-up included)"
    benchmark.pedantic(
        lambda: runs.setdefault("two", _torchrun(tmp_path, setup, pipeline, k, RANKS)), rounds=1, iterations=1
    )
    two = runs["two"]
    img_one, img_two = _img_per_s(one), _img_per_s(two)
    last = two[-1].dist
    info = schema.Scaling(
        pipeline=pipeline,
        persistency=k,
        per_rank_batch_size=PER_RANK_BATCH,
        backend=last["backend"],
        ranks=RANKS,
        img_per_s_1_rank=img_one,
        img_per_s_2_ranks=img_two,
        scaling_efficiency=img_two / (RANKS * img_one),
        data_wait_s_max=last["data_wait_s_max"],
        data_wait_s_mean=last["data_wait_s_mean"],
        compute_s_max=last["compute_s_max"],
        compute_s_mean=last["compute_s_mean"],
        allreduce_probe_s=last["allreduce_probe_s"],
        steps_per_epoch=two[-1].steps,
        allreduce_share_of_step=last["allreduce_probe_s"] * two[-1].steps / two[-1].wall_s,
        config=read_manifest(tmp_path / f"{pipeline}-K{k}-ranks{RANKS}")["config"],
    )
    benchmark.extra_info.update(schema.to_extra_info(info))
