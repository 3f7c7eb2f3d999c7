"""Pipelines on their own (no model), and each against a hand-written loop, side by side in one run."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import pytest

import references
from conftest import PIPELINE_ONLY_SAMPLES
from persist.benchjson import schema
from persist.data import load_dataset
from persist.data.pipelines import make_pipeline
from persist.measure import make_sync
from persist.stats import ratio_check

MIN_RATIO = 0.98  # persist's pipeline must reach this fraction of the hand-written loop's img/s
MIN_PAIRS = 9  # sign-test interval [x_(2), x_(8)]: 96% coverage
ONLY_BATCH_SIZES = (32, 256, 512)


@pytest.fixture(scope="session")
def pipeline_data(setup):
    return load_dataset(replace(setup.base, train_size=PIPELINE_ONLY_SAMPLES[setup.profile]))


def _epoch_of(pipeline, device):
    sync, epochs = make_sync(device), iter(range(1, 1_000_000))

    def epoch():
        for _ in pipeline.epoch(next(epochs)):
            pass
        sync()  # deliberate sync: the last batch has arrived on the device

    return epoch


@pytest.mark.parametrize("m", ONLY_BATCH_SIZES, ids=[f"m{m}" for m in ONLY_BATCH_SIZES])
def bench_pipeline_only(benchmark, setup, pipeline_data, pipeline, m):
    config = replace(setup.base, pipeline=pipeline, batch_size=m, train_size=None)
    p = make_pipeline(config, pipeline_data, setup.device)
    benchmark.group = "pipeline-only"
    try:
        benchmark.pedantic(_epoch_of(p, setup.device), rounds=setup.rounds, warmup_rounds=1, iterations=1)
    finally:
        p.close()
    samples, described = len(p) * m, p.describe()
    info = schema.PipelineOnly(
        pipeline=pipeline,
        batch_size=m,
        samples=samples,
        img_per_s=samples / benchmark.stats.stats.median,
        device=str(setup.device),
        storage=config.storage,
        decoder=described.get("decoder", "-"),
        decode_setup_s=described.get("decode_setup_s"),  # JPEG + preloaded: every file decoded once, before epoch 1
        files_decoded=len(pipeline_data.train_files),
        config=config.as_dict(),
        pipeline_options=described,
    )
    benchmark.extra_info.update(schema.to_extra_info(info))


REFERENCES = {  # each loop, and the pipeline settings (as describe() records them) that it takes over
    "preloaded": (references.preloaded_loop, ()),
    "torchvision": (references.dataloader_loop, ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor")),
    "dali": (references.dali_loop, ("num_threads",)),
}


def _clocked(epoch) -> float:
    start = time.perf_counter()
    epoch()
    return time.perf_counter() - start


def bench_against_hand_written(benchmark, setup, pipeline_data, pipeline):
    """Each round pairs the hand-written loop (clocked in the untimed setup) with persist's pipeline (timed).

    Every pair gets a fresh pipeline and a fresh reference, each warmed up by one epoch: how a pipeline's threads
    land on a small shared machine moves its speed by a few percent from one instance to the next, so the pairs
    must sample that too, or one unlucky instance would look like a real shortfall. One ratio per pair (theirs s /
    ours s); the check fails only when the 95% interval of the median ratio lies wholly below MIN_RATIO."""
    m = 256
    # the hand-written loops do not augment: compare like with like
    config = replace(setup.base, pipeline=pipeline, batch_size=m, train_size=None, augment="none", reuse="same")
    make_reference, settings = REFERENCES[pipeline]
    reference_s: list[float] = []
    live: list = []

    def fresh_pair():
        for p in live:
            p.close()
        live.clear()
        ours = make_pipeline(config, pipeline_data, setup.device)
        live.append(ours)
        options = {name: ours.describe()[name] for name in settings}  # the same workers, pinning and threads
        reference, ours_epoch = make_reference(pipeline_data, m, setup.device, **options), _epoch_of(ours, setup.device)
        reference(), ours_epoch()  # warm-up: first epochs build pipelines, start threads and fill prefetch queues
        reference_s.append(_clocked(reference))
        return (ours_epoch,), {}

    benchmark.group = "vs hand-written loop"
    try:
        benchmark.pedantic(lambda epoch: epoch(), setup=fresh_pair, rounds=max(MIN_PAIRS, setup.rounds))
    finally:
        for p in live:
            p.close()
    ratios = [ref / our for ref, our in zip(reference_s, benchmark.stats.stats.data, strict=True)]
    check = ratio_check(f"{pipeline} img/s / hand-written loop's", ratios, low_bound=MIN_RATIO)
    info = schema.VsReference(
        pipeline=pipeline,
        batch_size=m,
        reference_median_s=statistics.median(reference_s),
        throughput_ratio=check.ratio,
        min_ratio=MIN_RATIO,
        config=config.as_dict(),
        checks=[check.as_dict()],
    )
    benchmark.extra_info.update(schema.to_extra_info(info))
    assert not check.failed, check.message()
