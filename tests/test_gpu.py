"""The CUDA paths: event clock, preloaded and DALI pipelines on the GPU, a training epoch. Skipped without CUDA.

Each test can fail: the event clock is held against a synchronized host timing of the same work, a planted host gap
must come back as gpu_idle_s, NVML must work wherever pynvml imports, and determinism settings are restored after
the test that sets them."""

import importlib.util
import os
import time
from dataclasses import replace

import pytest
import torch

from persist.config import RunConfig
from persist.data.pipelines import make_pipeline
from persist.measure.clock import CudaEventClock
from persist.measure.nvml import open_sampler
from persist.training.trainer import Trainer

pytestmark = pytest.mark.gpu
HAS_PYNVML = importlib.util.find_spec("pynvml") is not None


def _work(x: torch.Tensor, matmuls: int = 10) -> torch.Tensor:
    """Tens of milliseconds of device work, queued without waiting (4096^3 matmuls; tanh keeps values bounded)."""
    for _ in range(matmuls):
        x = torch.tanh(x @ x / 64)
    return x


@pytest.fixture
def restore_determinism():
    """What set_determinism changes process-wide, put back after the test, so later tests run as configured."""
    saved = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[0], saved[1]
    torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
    if saved[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


def test_the_event_clock_agrees_with_a_synchronized_host_clock_within_10_percent():
    """If the events timed the host's launches (or another stream), compute_s would be a tiny part of host_s."""
    a = torch.randn(4096, 4096, device="cuda")
    a = _work(a)
    torch.cuda.synchronize()  # deliberate sync: warm-up (cuBLAS handle, kernels) done before timing
    clock, host_s = CudaEventClock(), 0.0
    clock.begin_epoch(steps=5)
    for _ in range(5):
        torch.cuda.synchronize()  # deliberate sync: the host timing starts on an idle device
        start = time.perf_counter()
        clock.step_start()
        a = _work(a)
        clock.step_end()
        torch.cuda.synchronize()  # deliberate sync: the host timing ends when the device is done
        host_s += time.perf_counter() - start
    times = clock.resolve()
    assert times.steps == 5 and host_s > 0.02  # enough work that launch and sync latencies are small beside it
    assert times.compute_s == pytest.approx(host_s, rel=0.10)


def test_a_planted_host_gap_between_steps_is_read_back_as_gpu_idle_time():
    a = _work(torch.randn(4096, 4096, device="cuda"), matmuls=2)
    clock = CudaEventClock()
    clock.begin_epoch(steps=3)
    for step in range(3):
        if step:  # two gaps: the device finishes, then waits 50 ms for the host
            torch.cuda.synchronize()  # deliberate sync: the device is idle through the planted gap
            time.sleep(0.05)
        clock.step_start()
        a = _work(a, matmuls=2)
        clock.step_end()
    times = clock.resolve()
    assert times.gpu_idle_s == pytest.approx(2 * 0.05, rel=0.2)
    assert times.compute_s > 0


def test_pause_leaves_a_gap_out_of_idle_time_and_the_pool_grows_past_the_announced_steps():
    a = torch.randn(4096, 4096, device="cuda")
    clock = CudaEventClock()
    clock.begin_epoch(steps=2)  # announce 2 steps, take 5: the event pool grows rather than fails
    for step in range(5):
        if step == 3:  # an evaluation inside the epoch: 50 ms that are not device idle time
            torch.cuda.synchronize()  # deliberate sync: as the trainer does before it pauses the clock
            time.sleep(0.05)
            clock.pause()
        clock.step_start()
        a = _work(a, matmuls=2)
        clock.step_end()
    times = clock.resolve()
    assert times.steps == 5 and len(clock.pool) == 10
    assert times.gpu_idle_s < 0.01  # the paused 50 ms is left out; back-to-back steps leave little idle time
    clock.begin_epoch(steps=2)  # the next epoch reuses the grown pool from its start
    assert clock.used == 0 and len(clock.pool) == 10 and clock.breaks == set()


def test_cuda_event_clock_times_device_work():
    clock = CudaEventClock()
    a = torch.randn(2048, 2048, device="cuda")
    clock.begin_epoch(steps=3)
    for _ in range(3):
        clock.step_start()
        for _ in range(10):
            a = torch.tanh(a @ a)
        clock.step_end()
    times = clock.resolve()
    assert times.steps == 3 and times.compute_s > 0 and 0 <= times.gpu_idle_s < times.compute_s


@pytest.mark.parametrize("pipeline", ["preloaded", pytest.param("dali", marks=pytest.mark.dali), "torchvision"])
def test_pipelines_on_the_gpu_feed_the_cpu_batches(tiny_data, pipeline):
    config = RunConfig(pipeline=pipeline, batch_size=32, seed=5)
    on_gpu = make_pipeline(replace(config, device="cuda"), tiny_data, torch.device("cuda"))
    on_cpu = make_pipeline(replace(config, pipeline="preloaded", device="cpu"), tiny_data, torch.device("cpu"))
    for (x, y), (ref_x, ref_y) in zip(on_gpu.epoch(3), on_cpu.epoch(3), strict=True):
        assert x.is_cuda and y.is_cuda
        assert torch.equal(y.cpu(), ref_y)
        torch.testing.assert_close(x.cpu(), ref_x, rtol=0, atol=1e-6)
    on_gpu.close()


def test_a_training_epoch_on_the_gpu_uses_cuda_events_and_nvml(tiny_data, tiny_config):
    trainer = Trainer(replace(tiny_config, device="cuda", persistency=2), tiny_data)
    record = trainer.run_epoch(1)
    assert record.clock == "cuda_events" and record.device == torch.cuda.get_device_name()
    assert record.compute_s > 0 and record.wall_s >= record.compute_s
    if HAS_PYNVML:  # NVML must work wherever its bindings import: a GPU machine without it is a finding
        assert record.nvml["available"], record.nvml.get("reason")
    else:
        assert "nvidia-ml-py is not installed" in record.nvml["reason"]
    trainer.close()


@pytest.mark.skipif(not HAS_PYNVML, reason="nvidia-ml-py is not installed")
def test_nvml_is_available_whenever_pynvml_imports():
    sampler = open_sampler(torch.device("cuda"), interval_s=0.01)
    sampler.start()
    _work(torch.randn(4096, 4096, device="cuda"), matmuls=20)
    torch.cuda.synchronize()  # deliberate sync: the work is done before sampling stops
    summary = sampler.stop()
    sampler.close()
    assert summary["available"], summary.get("reason")
    assert summary["power_samples"] > 0 and summary["mem_used_peak_bytes"] > 64 << 20


def test_deterministic_runs_are_identical_whichever_pipeline_feeds_them(tiny_data, tiny_config, restore_determinism):
    """--deterministic: cuDNN and cuBLAS pick deterministic algorithms, so bit-identical batches give bit-identical
    trajectories on the GPU too."""
    losses = {}
    for pipeline in ("preloaded", "torchvision"):
        config = replace(tiny_config, device="cuda", pipeline=pipeline, deterministic=True, persistency=2)
        trainer = Trainer(config, tiny_data)
        assert trainer.determinism["applied"] and torch.backends.cudnn.deterministic
        losses[pipeline] = [trainer.train_epoch(e)["train_loss"] for e in (1, 2)]
        trainer.close()
    assert losses["preloaded"] == losses["torchvision"]
