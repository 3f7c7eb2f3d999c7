"""--dataset imagefolder: mixed sizes and modes decoded to RGB, the shared random-resized-crop windows on every
pipeline, a corrupt file named before training (or skipped and listed), and a changed folder noticed."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import HAS_DALI
from persist.cli.main import main
from persist.config import RunConfig
from persist.data import load_dataset
from persist.data.imagefolder import INDEX_NAME, decode_rgb
from persist.data.pipelines import make_pipeline, preloaded
from persist.data.pipelines.sources import FolderSource
from persist.data.pipelines.torchvision_loader import EpochBatchSampler
from persist.data.resized_crop import RATIO, SCALE, resized_crop_one, rrc_windows
from persist.errors import ConfigError, FolderError

S = 16
PIPELINES = ["preloaded", "torchvision", pytest.param("dali", marks=pytest.mark.dali)]
CPU = torch.device("cpu")


def _ramp(height: int, width: int, seed: int) -> np.ndarray:
    """Strong structure in every direction (a misplaced window shows at once), plus a per-image offset."""
    rows, cols = np.mgrid[0:height, 0:width]
    offset = seed * 37 % 60
    return np.stack(
        [255 * rows / height, 255 * cols / width, (offset + 120 + 100 * np.sin(rows / 3 + cols / 5)) % 256], axis=-1
    ).astype(np.uint8)


def write_mixed_folder(root, per_class: int = 8):
    """Two classes; grayscale and colour JPEGs, RGBA and palette PNGs, a CMYK JPEG, at sizes 18..70 px."""
    modes = ["RGB", "L", "RGBA", "P", "CMYK"]
    n = 0
    for split, count in (("train", per_class), ("val", 3)):
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                height, width = 18 + (n * 7) % 53, 20 + (n * 11) % 47
                image = Image.fromarray(_ramp(height, width, n))
                mode = modes[n % len(modes)]
                image = image.convert(mode) if mode != "P" else image.quantize(colors=64)
                suffix = ".png" if mode in ("RGBA", "P") else ".jpg"
                image.save(root / split / label / f"{i:03d}{suffix}")
                n += 1
    return root


@pytest.fixture
def folder(tmp_path):
    return write_mixed_folder(tmp_path / "images")


def _config(folder, **changes) -> RunConfig:
    base = RunConfig(
        dataset="imagefolder", data_root=str(folder), image_size=S, batch_size=4, width=0.125, device="cpu"
    )
    return replace(base, **changes)


def test_every_mode_decodes_to_rgb_and_the_test_split_is_s_by_s(folder):
    data = load_dataset(_config(folder))
    assert len(data.train_files) == 16 and data.test_x.shape == (6, S, S, 3) and data.num_classes == 2
    for path, (height, width) in zip(data.train_files, data.train_sizes, strict=True):
        assert decode_rgb(path).shape == (3, height, width), path
    assert {p.rsplit(".", 1)[1] for p in data.train_files} == {"jpg", "png"}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_each_pipeline_trains_one_epoch_on_a_mixed_folder(folder, tmp_path, pipeline):
    out = tmp_path / "run"
    flags = ["--dataset", "imagefolder", "--data-root", str(folder), "--image-size", str(S), "--pipeline", pipeline]
    assert main(["train", *flags, "-m", "4", "--width", "0.125", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "epochs.jsonl").read_text().splitlines()[-1])
    assert record["loads"] == 4 and np.isfinite(record["train_loss"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_folder"]["image_size"] == S and manifest["image_folder"]["skipped_files"] == []
    assert "not bit-identical" in manifest["pipeline"]["pixels"]


def test_windows_follow_torchvisions_rules_and_the_seed():
    sizes = torch.tensor([[300, 400]] * 500 + [[10, 1000], [1000, 10]], dtype=torch.int64)
    w = rrc_windows(sizes, seed=3, epoch=2, load=1, batch_size=len(sizes))
    again = rrc_windows(sizes, seed=3, epoch=2, load=1, batch_size=len(sizes))
    other = rrc_windows(sizes, seed=3, epoch=2, load=2, batch_size=len(sizes))
    assert all(torch.equal(a, b) for a, b in zip(vars(w).values(), vars(again).values(), strict=True))
    assert not torch.equal(w.top, other.top)
    assert (w.top >= 0).all() and (w.left >= 0).all()
    assert (w.top + w.height <= sizes[:, 0]).all() and (w.left + w.width <= sizes[:, 1]).all()
    area = (w.height * w.width)[:500] / (300 * 400)
    aspect = (w.width / w.height)[:500]
    assert area.min() >= SCALE[0] - 0.01 and area.max() <= SCALE[1]
    assert aspect.min() >= RATIO[0] - 0.02 and aspect.max() <= RATIO[1] + 0.02
    assert 0.4 < w.flip[:500].float().mean() < 0.6
    # no attempt fits a 10 x 1000 strip: the fallback, the widest allowed centred crop
    assert [int(t[500]) for t in (w.top, w.left, w.height, w.width)] == [0, 493, 10, 13]
    assert [int(t[501]) for t in (w.top, w.left, w.height, w.width)] == [493, 0, 13, 10]
    # with two ranks, each rank's windows are its slice of the global batch's draw (same sizes: same windows)
    half = rrc_windows(sizes[:251], seed=3, epoch=2, load=1, batch_size=251, rank=0, world_size=2)
    assert torch.equal(half.top, rrc_windows(sizes[:502], 3, 2, 1, 502).top[:251])


def _reference_batches(data, config, epoch: int = 1):
    """The batches each pipeline should cut: rrc_windows + torchvision's resized_crop on the decoded files, in uint8."""
    from persist.data.base import batch_indices, epoch_order

    sizes = torch.tensor(data.train_sizes)
    order = epoch_order(len(data.train_y), config.seed, epoch)
    for load, index in enumerate(batch_indices(order, config.batch_size)):
        windows = rrc_windows(sizes[index], config.seed, epoch, load, config.batch_size)
        yield torch.stack(
            [
                resized_crop_one(decode_rgb(data.train_files[i]), row, S)
                for i, row in zip(index.tolist(), windows.rows(), strict=True)
            ]
        )


@pytest.mark.parametrize(("pipeline", "mean_levels"), [("torchvision", 0.0), ("preloaded", 12.0), ("dali", 3.0)])
def test_each_pipeline_cuts_the_seeds_windows(folder, pipeline, mean_levels):
    """Every pipeline's batches against the reference cut at the seed's windows: torchvision exactly, DALI and
    preloaded within their resamplers' gap (in pixel levels of 255); the same batches against the previous epoch's
    windows are far off, so a wrong window could not pass."""
    if pipeline == "dali" and not HAS_DALI:
        pytest.skip("needs NVIDIA DALI")
    config = _config(folder, pipeline=pipeline)
    data = load_dataset(config)
    p = make_pipeline(config, data, CPU)
    try:
        batches = [x for x, _ in p.epoch(2)]
    finally:
        p.close()
    pixels = torch.cat(batches) * 255  # normalization unit: x = pixel / 255
    reference = torch.cat(list(_reference_batches(data, config, 2))).float()
    wrong = torch.cat(list(_reference_batches(data, config, 1))).float()
    gap = (pixels - reference).abs().mean().item()
    assert gap <= mean_levels + 1e-4, gap
    assert (pixels - wrong).abs().mean().item() > 4 * max(gap, 2.0)


def test_each_pipeline_draws_the_seeds_windows(folder):
    """The windows themselves: the torchvision sampler sends them, DALI's source sends them, preloaded draws them."""
    config = _config(folder)
    data = load_dataset(config)
    sizes = torch.tensor(data.train_sizes)
    from persist.data.base import batch_indices, epoch_order

    index = batch_indices(epoch_order(16, 0, 3), 4)[1]
    expected = rrc_windows(sizes[index], 0, 3, 1, 4)
    sampler = EpochBatchSampler(FolderSource(data), 4, 0)
    sampler.set_epoch(3)
    assert [row[0] for row in list(sampler)[1]] == index.tolist()
    assert [row[1:] for row in list(sampler)[1]] == expected.rows()
    pipeline = make_pipeline(config, data, CPU)
    assert isinstance(pipeline.source, FolderSource)
    assert pipeline.source.cuts(index, 0, 3, 1, 4).rows() == expected.rows()
    if HAS_DALI:
        from types import SimpleNamespace

        from persist.data.pipelines.dali_loader import LoadSource

        source = LoadSource(FolderSource(data), 4, 0, 3, (0, 1))
        _, _, start, shape, flip = source(SimpleNamespace(epoch_idx=0, iteration=1))
        assert start.tolist() == [[r[0], r[1]] for r in expected.rows()]
        assert shape.tolist() == [[r[2], r[3]] for r in expected.rows()]
        assert flip.tolist() == [int(r[4]) for r in expected.rows()]


def _corrupt(folder):
    bad = folder / "train" / "dog" / "broken.jpg"
    jpeg = sorted((folder / "train" / "dog").glob("*.jpg"))[0]
    bad.write_bytes(jpeg.read_bytes()[:60])  # a JPEG cut off in its header
    return bad


def test_a_corrupt_file_is_one_line_before_training_and_can_be_skipped(folder, tmp_path, capsys):
    bad = _corrupt(folder)
    flags = ["train", "--dataset", "imagefolder", "--data-root", str(folder), "--image-size", str(S), "-m", "4"]
    flags += ["--width", "0.125", "--device", "cpu", "--quiet"]
    assert main([*flags, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "--skip-bad-files" in err
    assert not (tmp_path / "a" / "epochs.jsonl").exists()
    assert main([*flags, "--skip-bad-files", "--out", str(tmp_path / "b")]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["image_folder"]["skipped_files"] == [str(bad)]
    assert manifest["image_folder"]["train_files"] == 16


def test_a_changed_folder_is_noticed(folder):
    config = _config(folder)
    assert len(load_dataset(config).train_files) == 16
    assert (folder / INDEX_NAME).is_file()
    extra = folder / "train" / "cat" / "new.jpg"
    Image.fromarray(_ramp(30, 40, 99)).save(extra)
    assert len(load_dataset(config).train_files) == 17
    extra.write_bytes(b"not an image")  # rewritten: size and mtime change, so it is decoded again
    with pytest.raises(FolderError, match=r"new\.jpg cannot be decoded"):
        load_dataset(config)


def test_preloaded_refuses_what_would_not_fit(folder, monkeypatch):
    monkeypatch.setattr(preloaded, "free_bytes", lambda device: 10_000)
    config = _config(folder, preload_size=64)
    with pytest.raises(ConfigError, match=r"preload_size=64: 16 images x 3 x 64 x 64 = 0.00 GB would not fit"):
        make_pipeline(config, load_dataset(config), CPU)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "synthetic", "image_size": 32}, "image_size=32 applies only to --dataset imagefolder"),
        ({"augment": "crop-flip"}, "random-resized crop and flip already"),
        ({"pipeline": "torchvision", "preload_size": 64}, "preload_size=64 applies only to --pipeline preloaded"),
        ({"image_size": 4}, "image_size=4 is not allowed"),
    ],
)
def test_folder_options_are_refused_where_they_do_not_apply(folder, changes, message):
    with pytest.raises(ConfigError, match=message):
        _config(folder, **changes)


def test_a_missing_or_misshapen_folder_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="needs --data-root"):
        load_dataset(RunConfig(dataset="imagefolder", device="cpu"))
    (tmp_path / "train").mkdir()
    with pytest.raises(FolderError, match="has no class folders"):
        load_dataset(_config(tmp_path))


def test_a_sweep_over_a_folder_trains_every_pipeline_in_full(folder, tmp_path, capsys):
    """Each pipeline resamples the crops its own way, so none is only timed (its convergence could not be borrowed)."""
    out = tmp_path / "sweep"
    flags = ["sweep", "--dataset", "imagefolder", "--data-root", str(folder), "--image-size", str(S)]
    flags += ["--preload-size", "20", "--pipelines", "preloaded,torchvision", "--batch-sizes", "4"]
    flags += ["--persistencies", "1,2", "--schedules", "constant", "--seeds", "1x", "--device", "cpu", "--quiet"]
    assert main([*flags, "--epochs", "3", "--timing-epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "timing_epochs=1 is not allowed with --dataset imagefolder and several pipelines" in err
    assert not out.exists()
    assert main([*flags, "--epochs", "3", "--out", str(out)]) == 0
    assert "every pipeline trains in full" in capsys.readouterr().out
    runs = sorted(out.iterdir())
    assert [run.name for run in runs] == [
        "preloaded-m4-K1-constant-s0",
        "preloaded-m4-K2-constant-s0",
        "torchvision-m4-K1-constant-s0",
        "torchvision-m4-K2-constant-s0",
    ]
    for run in runs:
        config = json.loads((run / "manifest.json").read_text())["config"]
        preload_size = 20 if run.name.startswith("preloaded") else None  # an option of one pipeline: its cells
        assert (config["image_size"], config["preload_size"], config["epochs"]) == (S, preload_size, 3), run.name
        assert len((run / "epochs.jsonl").read_text().splitlines()) == 3, run.name


def test_a_sweep_passes_precision_and_channels_last_to_every_cell():
    from persist.runs.sweep import grid_from_args

    configs = grid_from_args("cpu", precision="bf16", channels_last=True).configs()
    assert {(c.precision, c.channels_last) for c in configs} == {("bf16", True)}
