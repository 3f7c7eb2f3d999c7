"""Several ranks on PyTorch's engine (torchrun, gloo on the CPU): the paper's sum semantics, records, and failures."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from persist.config import RunConfig
from persist.data import batch_indices, epoch_order
from persist.errors import ConfigError
from persist.records import read_records
from persist.training.dist import torchrun_command

SMALL = [
    "--dataset",
    "synthetic",
    "--train-size",
    "512",
    "--test-size",
    "128",
    "--width",
    "0.125",
    "-K",
    "2",
    "--device",
    "cpu",
    "--quiet",
]


def _torchrun(nproc, args, **popen):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = torchrun_command(nproc, args)
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_ranks_split_each_global_batch():
    order = epoch_order(100, 0, 1)
    one = batch_indices(order, 20)  # one rank, m=20
    two = [batch_indices(order, 10, rank, 2) for rank in (0, 1)]  # two ranks, m=10 each
    assert len(one) == len(two[0]) == len(two[1]) == 5
    for i, batch in enumerate(one):
        assert torch.equal(torch.cat([two[0][i], two[1][i]]), batch)


@pytest.mark.slow
def test_two_ranks_of_64_follow_one_rank_of_128(tmp_path):
    """DDP averages gradients; persist scales them back to the paper's sum over the global minibatch."""
    for nproc, m, name in ((1, 128, "one"), (2, 64, "two")):
        run = _torchrun(nproc, [*SMALL, "-m", str(m), "--epochs", "2", "--out", str(tmp_path / name)])
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    one, two = read_records(tmp_path / "one"), read_records(tmp_path / "two")
    for a, b in zip(one, two, strict=True):
        assert (a.loads, a.steps, a.fresh_samples) == (b.loads, b.steps, b.fresh_samples) == (4, 8, 512)
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4)
        assert b.test_loss == pytest.approx(a.test_loss, rel=1e-4)
        assert b.test_acc == a.test_acc
    assert two[0].dist["world_size"] == 2 and two[0].dist["backend"] == "gloo"
    assert two[0].dist["compute_s_max"] >= two[0].dist["compute_s_mean"] > 0
    assert two[0].dist["allreduce_probe_s"] > 0
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "backend": "gloo"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    [
        ["--augment", "crop-flip"],
        ["--augment", "crop-flip", "--reuse", "reaugment"],
        ["--storage", "jpeg"],
    ],
    ids=["crop-flip", "reaugment", "jpeg"],
)
def test_two_ranks_follow_one_rank_with_augmentation_and_jpeg_storage(tmp_path, variant):
    """Each rank crops, flips and decodes only its part of the global batch; its crops are the ones the global
    batch's samples get on one rank, so 2 ranks of m=64 still follow 1 rank of m=128."""
    root = ["--data-root", str(tmp_path / "data")]  # JPEG files are written once, on first use, and shared
    for nproc, m, name in ((1, 128, "one"), (2, 64, "two")):
        args = [*SMALL, *variant, *root, "-m", str(m), "--epochs", "1", "--out", str(tmp_path / name)]
        run = _torchrun(nproc, args)
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
    (a,), (b,) = read_records(tmp_path / "one"), read_records(tmp_path / "two")
    assert (a.loads, a.steps, a.fresh_samples) == (b.loads, b.steps, b.fresh_samples) == (4, 8, 512)
    assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4)
    assert b.test_loss == pytest.approx(a.test_loss, rel=1e-4) and b.test_acc == a.test_acc
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    config = manifest["config"]
    assert (config["augment"], config["reuse"], config["storage"]) == (
        "crop-flip" if "crop-flip" in variant else "none",
        "reaugment" if "reaugment" in variant else "same",
        "jpeg" if "jpeg" in variant else "raw",
    )


@pytest.mark.slow
def test_a_global_batch_larger_than_the_data_is_one_line_from_rank_0(tmp_path):
    run = _torchrun(2, [*SMALL, "-m", "300", "--out", str(tmp_path / "run")])
    _, err = run.communicate(timeout=300)
    assert run.returncode != 0
    errors = [line for line in err.splitlines() if "persist train: error" in line]
    assert errors == [
        "persist train: error: batch_size=300 is not allowed: the training set has 512 samples, "
        "fewer than one global batch of 300 x 2 ranks"
    ]


@pytest.mark.slow
def test_a_dead_rank_takes_the_job_down_and_keeps_finished_epochs(tmp_path):
    out = tmp_path / "run"
    run = _torchrun(
        2, [*SMALL, "-m", "64", "--epochs", "50", "--delay-ms", "50", "--out", str(out)], start_new_session=True
    )
    deadline = time.monotonic() + 120
    while len(read_records(out)) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = _children(run.pid)
    assert len(workers) == 2, workers
    os.kill(max(workers), signal.SIGKILL)  # the younger worker: rank 1
    _, err = run.communicate(timeout=120)
    assert run.returncode != 0
    assert len(read_records(out)) >= 1
    assert "ChildFailedError" in err, err[-2000:]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _check_configs(rank, world, port, result_dir):
    """One rank of a 2-process gloo group whose ranks disagree on K."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.distributed.init_process_group("gloo")
    from persist.training.dist import DistContext

    context = DistContext(rank, world, rank, "gloo")
    try:
        context.check_same_config(RunConfig(persistency=1 + rank))
        message = "no error"
    except ConfigError as error:
        message = str(error)
    (result_dir / f"rank{rank}").write_text(message)
    context.close()


def test_mismatched_configs_are_refused_on_every_rank(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_check_configs, args=(2, port, tmp_path), nprocs=2)
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}").read_text() == "rank 1's config differs from rank 0's in persistency"


def test_close_frees_ddp_while_the_group_is_still_there(tmp_path):
    """DDP sits in reference cycles; freed only after destroy_process_group (at exit), its reducer aborted a rank
    ("terminate called without an active exception"). close() collects it first. Automatic collection is off here,
    so without that collect DDP would outlive the group and the check below would read False."""
    import gc
    import weakref

    from persist.training.dist import DistContext

    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    gc.disable()
    try:
        context = DistContext(0, 2, 0, "gloo")  # a context that wraps; its group here has one rank
        ddp = context.wrap(torch.nn.Linear(4, 2), torch.device("cpu"))
        ddp(torch.randn(3, 4)).sum().backward()
        group_alive_when_freed = []
        weakref.finalize(ddp, lambda: group_alive_when_freed.append(torch.distributed.is_initialized()))
        del ddp
        context.close()
        gc.collect()
        assert group_alive_when_freed == [True]
        assert not torch.distributed.is_initialized()
    finally:
        gc.enable()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
