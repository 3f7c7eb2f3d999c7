"""Crop-flip augmentation from the shared seed: the same crops and flips in every pipeline, bit for bit, and the two
reuse variants: `same` reuses the loaded batch K times, `reaugment` gives each use its own crop-flip."""

import pytest
import torch
import torch.nn.functional as F
from test_pipelines import _epoch

from conftest import HAS_DALI
from persist.cli.main import main
from persist.config import RunConfig
from persist.data import batch_indices, epoch_order
from persist.data.augment import PAD, crop_flip, crop_flip_params
from persist.data.base import Normalizer
from persist.errors import ConfigError
from persist.records import read_records
from persist.training.trainer import Trainer


def _by_hand(image_chw, top, left, flip, fill=0):
    """One image, the slow way: pad, slice, flip."""
    padded = F.pad(image_chw.float(), (PAD,) * 4, value=0.0)
    if not isinstance(fill, int):
        padded[:, :PAD], padded[:, -PAD:], padded[:, :, :PAD], padded[:, :, -PAD:] = (fill.view(3, 1, 1),) * 4
    out = padded[:, top : top + 32, left : left + 32]
    return (out.flip(-1) if flip else out).to(image_chw.dtype)


def test_crop_flip_is_pad_crop_flip_and_only_moves_pixels():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    params = crop_flip_params(seed=3, epoch=2, load=1, use=1, batch_size=16)
    out = crop_flip(images, params)
    assert params.top.min() >= 0 and params.top.max() <= 2 * PAD and params.flip.any() and not params.flip.all()
    for i in range(16):
        expected = _by_hand(images[i], int(params.top[i]), int(params.left[i]), bool(params.flip[i]))
        assert torch.equal(out[i], expected), i
    # on normalized floats, padding with normalize(0) gives exactly normalize(crop_flip(pixels))
    normalize = Normalizer(_stats())
    fill = normalize(torch.zeros(3, 1, 1, dtype=torch.uint8)).flatten()
    assert torch.equal(crop_flip(normalize(images), params, fill), normalize(out))


def test_crop_flip_builds_no_tensor_from_host_values(monkeypatch):
    """On CUDA, torch.as_tensor(0, device=cuda) on every call would be a blocking host-to-device copy: the fill is a
    kernel argument (a scalar) or a tensor the caller made once on the device, and the output is what it was."""
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    params = crop_flip_params(seed=1, epoch=1, load=0, use=1, batch_size=8)
    normalize = Normalizer(_stats())
    fill = normalize(torch.zeros(3, 1, 1, dtype=torch.uint8)).flatten()
    expected = [crop_flip(images, params), crop_flip(normalize(images), params, fill)]
    made = []
    for name in ("as_tensor", "tensor", "scalar_tensor"):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _real=real, _name=name, **k: made.append(_name) or _real(*a, **k))
    out = [crop_flip(images, params), crop_flip(normalize(images), params, fill)]
    assert made == []
    assert all(torch.equal(a, b) for a, b in zip(out, expected, strict=True))
    for i in range(8):  # and it is still pad, crop, flip
        assert torch.equal(
            out[0][i], _by_hand(images[i], int(params.top[i]), int(params.left[i]), bool(params.flip[i]))
        )


def _stats():
    from persist.data.datasets import synthetic

    return synthetic(64, 16).normalized("standardize")


def test_parameters_come_from_seed_epoch_load_and_use_and_split_by_rank():
    a = crop_flip_params(0, 1, 0, 1, 8)
    assert torch.equal(a.top, crop_flip_params(0, 1, 0, 1, 8).top)  # deterministic
    for other in (crop_flip_params(1, 1, 0, 1, 8), crop_flip_params(0, 2, 0, 1, 8), crop_flip_params(0, 1, 1, 1, 8)):
        assert not torch.equal(torch.stack([a.top, a.left]), torch.stack([other.top, other.left]))
    assert not torch.equal(a.top, crop_flip_params(0, 1, 0, 2, 8).top)  # each use its own
    whole = crop_flip_params(0, 1, 0, 1, 8, rank=0, world_size=2)  # rank r's samples: slice r of the global batch
    two = crop_flip_params(0, 1, 0, 1, 16)
    assert torch.equal(whole.top, two.top[:8])
    assert torch.equal(crop_flip_params(0, 1, 0, 1, 8, rank=1, world_size=2).left, two.left[8:])


@pytest.mark.parametrize("batch_size", [32, 100])
def test_every_pipeline_applies_the_same_crops_and_flips(tiny_data, batch_size):
    data = tiny_data.normalized("standardize")
    options = {"normalization": "standardize", "batch_size": batch_size, "augment": "crop-flip"}
    normalize = Normalizer(data)
    for epoch in (1, 2):
        order = epoch_order(len(data.train_y), 5, epoch)
        expected = [
            normalize(crop_flip(data.train_x[index].permute(0, 3, 1, 2), crop_flip_params(5, epoch, i, 1, batch_size)))
            for i, index in enumerate(batch_indices(order, batch_size))
        ]
        plain, _ = _epoch(data, "preloaded", epoch=epoch, normalization="standardize", batch_size=batch_size)
        assert not torch.equal(plain[0][0], expected[0])
        variants = [("preloaded", {}), ("torchvision", {}), ("torchvision", {"num_workers": 2})]
        variants += [("dali", {"dali_threads": 2})] if HAS_DALI else []
        for pipeline, extra in variants:
            batches, _ = _epoch(data, pipeline, epoch=epoch, **options, **extra)
            assert len(batches) == len(expected)
            for load, ((x, _), want) in enumerate(zip(batches, expected, strict=True)):
                assert torch.equal(x, want), (pipeline, extra, epoch, load)


def _uses(tiny_data, reuse, K=3):
    """Every step's input of one epoch: the trainer's step is replaced by a recorder."""
    config = RunConfig(
        dataset="synthetic", train_size=256, test_size=64, batch_size=64, width=0.125, device="cpu",
        persistency=K, augment="crop-flip", reuse=reuse, seed=2,
    )  # fmt: skip
    trainer = Trainer(config, tiny_data)
    seen = []
    trainer.step = lambda x, y, loss_sum: seen.append(x.clone())
    trainer.train_epoch(1)
    trainer.close()
    return [seen[i : i + K] for i in range(0, len(seen), K)]


def test_same_reuses_the_loaded_batch_and_reaugment_redraws_each_use(tiny_data):
    same, reaugment = _uses(tiny_data, "same"), _uses(tiny_data, "reaugment")
    assert len(same) == len(reaugment) == 256 // 64
    normalize = Normalizer(tiny_data)
    order = epoch_order(256, 2, 1)
    for load, (uses_same, uses_re) in enumerate(zip(same, reaugment, strict=True)):
        raw = tiny_data.train_x[batch_indices(order, 64)[load]].permute(0, 3, 1, 2)
        assert all(torch.equal(x, uses_same[0]) for x in uses_same)  # same: one batch, K steps
        assert torch.equal(uses_re[0], uses_same[0])  # use 1 is the same crop-flip in both variants
        for use, x in enumerate(uses_re, start=1):
            assert torch.equal(x, normalize(crop_flip(raw, crop_flip_params(2, 1, load, use, 64))))
        assert not torch.equal(uses_re[1], uses_re[0]) and not torch.equal(uses_re[2], uses_re[1])


def test_reaugment_needs_crop_flip_and_bad_values_are_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="reuse='reaugment' needs augment='crop-flip'"):
        RunConfig(reuse="reaugment")
    assert main(["train", "--augment", "rotate", "--out", str(tmp_path / "a")]) == 2
    assert "augment='rotate' is not allowed: choose one of none, crop-flip" in capsys.readouterr().err
    assert main(["train", "--reuse", "twice", "--out", str(tmp_path / "b")]) == 2
    assert "reuse='twice' is not allowed: choose one of same, reaugment" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["raw", "jpeg"])
def test_reaugment_runs_are_identical_through_every_pipeline(tmp_path, storage):
    """The issue's whole path: stored files (written on first use), crop-flip, a fresh crop-flip per use."""
    common = ["train", "--dataset", "synthetic", "--train-size", "256", "--test-size", "64", "--width", "0.125"]
    common += ["-m", "32", "-K", "3", "--epochs", "2", "--augment", "crop-flip", "--reuse", "reaugment"]
    common += ["--storage", storage, "--data-root", str(tmp_path / "data")]
    pipelines = ["preloaded", "torchvision"] + (["dali"] if HAS_DALI else [])
    losses = {}
    for pipeline in pipelines:
        out = tmp_path / pipeline
        assert main([*common, "--pipeline", pipeline, "--device", "cpu", "--quiet", "--out", str(out)]) == 0
        losses[pipeline] = [(r.train_loss, r.test_loss, r.test_acc) for r in read_records(out)]
    assert all(v == losses["preloaded"] for v in losses.values()), losses
