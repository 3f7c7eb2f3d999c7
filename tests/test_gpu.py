"""The CUDA paths: event clock, preloaded and DALI pipelines on the GPU, a training epoch. Skipped without CUDA."""

from dataclasses import replace

import pytest
import torch

from persist.config import RunConfig
from persist.data.pipelines import make_pipeline
from persist.measure.clock import CudaEventClock
from persist.training.trainer import Trainer

pytestmark = pytest.mark.gpu


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
    assert record.nvml["available"] or "NVML" in record.nvml["reason"]
    trainer.close()


def test_deterministic_runs_are_identical_whichever_pipeline_feeds_them(tiny_data, tiny_config):
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
