"""The CUDA paths whose logic tests/test_cuda_paths.py checks on a CPU, run where CUDA exists. Skipped without it."""

import pytest
import torch

from persist.config import RunConfig
from persist.measure.syncs import count_syncs
from persist.training.trainer import Trainer

pytestmark = pytest.mark.gpu
SMALL = {"train_size": 1024, "test_size": 128, "width": 0.25, "batch_size": 128, "device": "cuda", "epochs": 1}


def test_an_fp16_epoch_makes_no_unmarked_sync():
    trainer = Trainer(RunConfig(**SMALL, precision="fp16", persistency=2))
    trainer.train_epoch(1)  # warm-up: cuDNN's first calls, the allocator
    counted = count_syncs(lambda: trainer.train_epoch(2), debug_mode=True)
    trainer.close()
    assert counted["unmarked"] == 0, counted


def test_tf32_with_compile_trains():
    trainer = Trainer(RunConfig(**SMALL, precision="tf32", compile=True))
    assert trainer.compile_s > 0
    epoch = trainer.train_epoch(1)
    trainer.close()
    assert torch.isfinite(torch.tensor(epoch["train_loss"])) and torch.backends.cuda.matmul.allow_tf32


def test_the_example_pins_its_loader_on_cuda():
    pytest.importorskip("sklearn", reason="the example reads scikit-learn's digits")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "own_loop.py"
    spec = importlib.util.spec_from_file_location("own_loop_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    args = example.parse(["--out", "unused", "--device", "cuda", "--model", "shufflenet_v2_x0_5"])
    args.train_size = 128
    _model, _optimizer, loader, _test, _device = example.setup(args)
    assert loader.pin_memory is True


def test_cudnn_benchmark_is_set_and_recorded():
    saved = torch.backends.cudnn.benchmark
    try:
        trainer = Trainer(RunConfig(**SMALL, cudnn_benchmark=True))
        assert torch.backends.cudnn.benchmark is True and trainer.determinism["cudnn_benchmark"] is True
        trainer.close()
    finally:
        torch.backends.cudnn.benchmark = saved


def test_auto_loads_on_a_stream_apart_on_the_runs_device_and_records_the_device_figures():
    import math

    trainer = Trainer(RunConfig(**SMALL, persistency=3, adaptive=True))
    seen, real_epoch = [], trainer.pipeline.epoch

    def epoch(number):  # runs in the prefetch thread: where its loads go
        for batch in real_epoch(number):
            seen.append((torch.cuda.current_stream(trainer.device), torch.cuda.current_device()))
            yield batch

    trainer.pipeline.epoch = epoch
    trainer.train_epoch(1)  # warm-up
    stats = trainer.train_epoch(2)
    training = torch.cuda.current_stream(trainer.device)
    trainer.close()
    assert seen and all(stream != training for stream, _ in seen)
    assert {index for _, index in seen} == {trainer.device.index}
    assert stats["clock"] == "cuda_events" and math.isfinite(stats["train_loss"])
    assert 0 <= stats["data_stall_s"] <= stats["wall_s"] and stats["device_wait_s"] >= 0


def test_a_fixed_k_epoch_records_the_devices_data_stall():
    trainer = Trainer(RunConfig(**SMALL, persistency=2))
    trainer.train_epoch(1)  # warm-up
    stats = trainer.train_epoch(2)
    trainer.close()
    assert stats["data_stall_s"] is not None and 0 <= stats["data_stall_s"] <= stats["wall_s"]
    assert stats["device_wait_s"] == 0.0


def test_a_batch_loaded_on_the_loading_stream_is_whole_when_training_uses_it():
    from persist.training.adaptive import Prefetcher

    device = torch.device("cuda", torch.cuda.current_device())

    def batches():
        for i in range(4):
            x = torch.full((2048, 2048), float(i), device=device)
            for _ in range(50):  # keeps the loading stream busy after the batch is handed over
                x = x * 1.0 + 0.0
            yield (x,)

    prefetcher = Prefetcher(batches(), device=device)
    sums = [float((x * 1.0).sum()) for (x,) in prefetcher]  # the product runs on the training stream
    prefetcher.close()
    assert sums == [float(i * 2048 * 2048) for i in range(4)]
