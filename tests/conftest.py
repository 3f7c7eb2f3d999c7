"""Shared fixtures: small datasets made in-process, a fake clock, and the gpu/dali skip rules."""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from persist.config import RunConfig
from persist.data.datasets import synthetic

HAS_CUDA = torch.cuda.is_available()
HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA: no CUDA device on this machine")
    skip_dali = pytest.mark.skip(reason="needs NVIDIA DALI: pip install 'persist[dali]'")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "dali" in item.keywords and not HAS_DALI:
            item.add_marker(skip_dali)


@pytest.fixture(scope="session")
def tiny_data():
    """256 training and 64 test images of the synthetic set: enough for every pipeline and a few steps."""
    return synthetic(256, 64)


@pytest.fixture
def tiny_config():
    return RunConfig(
        dataset="synthetic", train_size=256, test_size=64, batch_size=32, width=0.125, epochs=2, device="cpu"
    )


class FakeClock:
    """A host clock that moves only when told: `sleep` advances it, every reading adds `tick`."""

    def __init__(self, tick: float = 0.0):
        self.t, self.tick = 0.0, tick

    def now(self) -> float:
        self.t += self.tick
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def fake_clock():
    return FakeClock()


def write_cifar_folder(root, n_per_batch: int = 20, seed: int = 0):
    """A cifar-10-batches-py folder in the real format (pickled dicts of bytes keys), with random images."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        images[name] = (data, labels)
    return folder, images


BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench_import(monkeypatch):
    """Imports bench/ modules by name, as `pytest bench` does (bench/ on sys.path), and forgets them after the test."""
    monkeypatch.syspath_prepend(str(BENCH))
    before = set(sys.modules)
    yield importlib.import_module
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(BENCH)):
            del sys.modules[name]
