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
