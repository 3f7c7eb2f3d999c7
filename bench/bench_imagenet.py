"""The `imagenet` workload: what persist's users run on their GPUs. ResNet-50 at 224 px, bf16, channels-last, m=256,
K in {1, 2, 4}, on every pipeline, from an image folder with ImageNet's preprocessing (random-resized crop + flip from
the seed's windows; persist/data/resized_crop.py), plus each pipeline's loading alone at that image size.

The folder is `--persist-data-root DIR` when DIR holds train/ and val/ (a real ImageNet, say), otherwise a synthetic
one (persist prepare --dataset synthetic-folder), written once under pytest's cache folder and reused.

On a CPU a smoke version runs instead, sized to finish in minutes on 2 cores: ResNet-18 at 32 px from small source
images, fp32 (bf16 autocast on a CPU without AMX ran 2x slower than fp32 here, and the smoke checks the path, not the
number), 16 training images, m=16 (one load per epoch), one timed round after one warm-up round. Every cell records
AU (accelerator utilization: compute time / wall time), the figure MLPerf Storage passes at 90%.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cells import epoch_extra_info, run_epochs
from persist.benchjson import schema
from persist.config import RunConfig
from persist.data import load_dataset
from persist.data.pipelines import make_pipeline
from persist.data.synthetic_folder import FolderSpec, write_synthetic_folder
from persist.measure import make_sync
from persist.training.trainer import Trainer
from persist.validation import image_folder_fields

PERSISTENCIES = (1, 2, 4)


@dataclass(frozen=True)
class Workload:
    model: str
    image_size: int
    precision: str
    channels_last: bool
    batch_size: int
    folder: FolderSpec  # the synthetic folder when no real one is given
    rounds: int | None  # timed rounds per cell; None: --persist-rounds


IMAGENET = {
    # 5,120 training images: 20 loads of m=256 per epoch; writing them takes a few minutes, once
    "cuda": Workload("torchvision:resnet50", 224, "bf16", True, 256, FolderSpec(5120, 512, 100), None),
    "cpu": Workload(
        "torchvision:resnet18", 32, "fp32", True, 16, FolderSpec(16, 8, 4, min_size=48, max_size=96), rounds=1
    ),
}


def _workload(setup) -> Workload:
    return IMAGENET["cuda" if setup.device.type == "cuda" else "cpu"]


@pytest.fixture(scope="session")
def imagenet_config(setup, pytestconfig, tmp_path_factory) -> RunConfig:
    """The workload's RunConfig on its folder: a real one from --persist-data-root, or the synthetic one."""
    workload = _workload(setup)
    given = pytestconfig.getoption("--persist-data-root")
    if given and (Path(given) / "train").is_dir():
        root = Path(given)
    else:
        spec = workload.folder
        name = f"synthetic-folder-{spec.train_images}-{spec.val_images}-{spec.classes}-{spec.min_size}-{spec.max_size}"
        # kept in pytest's cache between sessions; a temporary folder when the cache plugin is off
        cache = getattr(pytestconfig, "cache", None)
        parent = cache.mkdir("persist-imagenet") if cache is not None else tmp_path_factory.mktemp("persist-imagenet")
        root, _ = write_synthetic_folder(parent / name, spec)
    return RunConfig(
        dataset="imagefolder",
        data_root=str(root),
        image_size=workload.image_size,
        model=workload.model,
        precision=workload.precision,
        channels_last=workload.channels_last,
        batch_size=workload.batch_size,
        device=str(setup.device),
        cudnn_benchmark=setup.device.type == "cuda",  # what the workload's users set (NVIDIA's ResNet-50 example)
        **image_folder_fields(workload.batch_size),  # what trains a ResNet on a folder, as persist train sets it
    )


@pytest.fixture(scope="session")
def imagenet_data(imagenet_config):
    return load_dataset(imagenet_config)


@pytest.mark.parametrize("persistency", PERSISTENCIES, ids=[f"K{k}" for k in PERSISTENCIES])
def bench_imagenet_epoch(benchmark, setup, imagenet_config, imagenet_data, pipeline, persistency):
    config = replace(imagenet_config, pipeline=pipeline, persistency=persistency, compute=setup.compute)
    benchmark.group = f"imagenet epoch: {pipeline}"
    trainer = Trainer(config, imagenet_data)
    try:
        rounds = run_epochs(benchmark, trainer, _workload(setup).rounds or setup.rounds)
    finally:
        trainer.close()
    info = epoch_extra_info(config, trainer, rounds)
    benchmark.extra_info.update(info, workload="imagenet", image_size=config.image_size, storage="image folder")


def bench_imagenet_loading(benchmark, setup, imagenet_config, imagenet_data, pipeline):
    """One epoch of loading alone (no model) at the workload's image size: each pipeline's decode img/s."""
    config = replace(imagenet_config, pipeline=pipeline)
    p = make_pipeline(config, imagenet_data, setup.device)
    sync, epochs = make_sync(setup.device), iter(range(1, 1_000_000))

    def epoch():
        for _ in p.epoch(next(epochs)):
            pass
        sync()  # deliberate sync: the last batch has arrived on the device

    benchmark.group = "imagenet loading"
    try:
        benchmark.pedantic(epoch, rounds=_workload(setup).rounds or setup.rounds, warmup_rounds=1, iterations=1)
    finally:
        p.close()
    samples, described = len(p) * config.batch_size, p.describe()
    info = schema.PipelineOnly(
        pipeline=pipeline,
        batch_size=config.batch_size,
        samples=samples,
        img_per_s=samples / benchmark.stats.stats.median,
        device=str(setup.device),
        storage=f"image folder, {config.image_size} px",
        decoder=described.get("decoder", "-"),
        decode_setup_s=described.get("decode_setup_s"),
        files_decoded=len(imagenet_data.train_files),
        config=config.as_dict(),
        pipeline_options=described,
    )
    benchmark.extra_info.update(schema.to_extra_info(info), workload="imagenet", image_size=config.image_size)
