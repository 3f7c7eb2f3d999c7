"""A user's mistake on the command line is one line naming the bad value and what is allowed, and exit 2."""

import json
import os
import subprocess

import pytest

from persist.cli.main import main

RUN = ["--dataset", "synthetic", "--train-size", "128", "--test-size", "32", "--width", "0.125", "-m", "32"]
RUN += ["--device", "cpu", "--quiet", "--epochs", "1"]


def _one_line(capsys, *words):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(word in err for word in words), err
    return err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", *RUN, "--out", str(out)]) == 0
    return out


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write to: chmod for a user, a read-only tmpfs for root (who ignores modes)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_report_into_a_read_only_folder_is_one_line(finished_run, read_only_folder, capsys):
    assert main(["report", str(finished_run), "--out", str(read_only_folder)]) == 2
    _one_line(capsys, f"--out {read_only_folder}", "cannot be written", "a folder you can write to")


def test_report_out_naming_a_file_is_one_line_and_leaves_the_file(finished_run, tmp_path, capsys):
    out = tmp_path / "report.md"
    out.write_text("mine")
    assert main(["report", str(finished_run), "--out", str(out)]) == 2
    _one_line(capsys, f"--out {out}", "is a file", "a folder")
    assert out.read_text() == "mine"


def test_report_out_inside_a_file_is_one_line(finished_run, tmp_path, capsys):
    (tmp_path / "notes").write_text("mine")
    out = tmp_path / "notes" / "report"
    assert main(["report", str(finished_run), "--out", str(out)]) == 2
    _one_line(capsys, f"--out {out}", "cannot be written")


@pytest.mark.parametrize("dataset", [["--train-size", "64", "--test-size", "16"], ["--dataset", "synthetic-folder"]])
def test_prepare_out_naming_a_file_is_one_line_and_leaves_the_file(tmp_path, capsys, dataset):
    out = tmp_path / "data.bin"
    out.write_text("mine")
    assert main(["prepare", *dataset, "--images", "4", "--quiet", "--out", str(out)]) == 2
    _one_line(capsys, f"--out {out}", "is a file", "a folder")
    assert out.read_text() == "mine"


def test_prepare_out_below_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "notes").write_text("mine")
    out = tmp_path / "notes" / "data"
    assert main(["prepare", "--train-size", "64", "--test-size", "16", "--quiet", "--out", str(out)]) == 2
    _one_line(capsys, f"--out {out}", "cannot be written", "is a file")


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 10**30])
def test_a_seed_torch_cannot_take_is_one_line_naming_the_range(tmp_path, capsys, seed):
    assert main(["train", *RUN, "--seed", str(seed), "--out", str(tmp_path / "run")]) == 2
    _one_line(capsys, f"seed={seed}", f"from {-(2**63)} to {2**64 - 1}")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seed", [2**64 - 1, -(2**63)])
def test_the_ends_of_the_seed_range_train(tmp_path, seed):
    from persist.records import read_manifest

    out = tmp_path / "run"
    assert main(["train", *RUN, "--augment", "crop-flip", "--seed", str(seed), "--out", str(out)]) == 0
    assert read_manifest(out)["config"]["seed"] == seed


def test_a_negative_seed_shuffles_as_it_did_before_the_range_was_widened():
    import torch

    from persist.data.base import epoch_order

    for seed, epoch in ((-1, 1), (-7, 3), (5, 2)):
        before = torch.randperm(100, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        assert torch.equal(epoch_order(100, seed, epoch), before)


@pytest.mark.parametrize("device", ["cuda:²", "cuda:٣", "cuda:01", "cuda:-1", "cuda:+1", "cuda:255", "cuda:", "tpu"])
def test_a_device_string_torch_would_refuse_or_misread_is_one_line(tmp_path, capsys, device):
    flags = [a for a in RUN if a != "cpu"]
    flags.remove("--device")
    assert main(["train", *flags, "--device", device, "--out", str(tmp_path / "run")]) == 2
    _one_line(capsys, f"device={device!r}", "use auto, cpu, cuda or cuda:N", "ASCII digits")


def test_the_device_strings_allowed():
    from persist.validation import check_device

    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:7", "cuda:127"):
        check_device(device)


def _bench_json(path, entries):
    machine = {"persist": {"device": "cpu", "device_id": "cpu x2"}}
    path.write_text(json.dumps({"machine_info": machine, "benchmarks": entries}))
    return str(path)


def _entry(name, data=(1.0, 1.01, 0.99), **extra):
    stats = {"data": list(data), "median": sorted(data)[1], "iqr": 0.01, "rounds": len(data)}
    return {"fullname": f"bench/bench_x.py::{name}", "name": name, "stats": stats, **extra}


EPOCH_INFO = {"kind": "train_epoch", "pipeline": "preloaded", "batch_size": 32, "persistency": 1, "device": "cpu"}
EPOCH_INFO |= {"clock": "host", "data_wait_s": 0.1, "compute_s": 0.8, "gpu_idle_s": 0.0, "loads": 4, "steps": 4}


@pytest.mark.parametrize("missing", ["fullname", "stats"])
def test_compare_of_an_entry_without_fullname_or_stats_names_the_file_benchmark_and_key(tmp_path, capsys, missing):
    good = _bench_json(tmp_path / "good.json", [_entry("bench_a"), _entry("bench_b")])
    broken = [_entry("bench_a"), _entry("bench_b")]
    del broken[1][missing]
    bad = _bench_json(tmp_path / "bad.json", broken)
    for pair in ([good, bad], [bad, good]):
        assert main(["compare", *pair]) == 2
        _one_line(capsys, bad, "benchmark 2 of 2 (bench_b)", f"no {missing!r}")


def test_compare_of_an_entry_with_neither_name_is_named_by_its_index(tmp_path, capsys):
    bad = _bench_json(tmp_path / "bad.json", [_entry("bench_a"), {"stats": {"data": [1.0]}}])
    assert main(["compare", bad, bad]) == 2
    _one_line(capsys, bad, "benchmark 2 of 2", "no 'fullname'")


@pytest.mark.parametrize("missing", ["stats", "stats.median"])
def test_summary_of_an_entry_without_stats_names_the_file_benchmark_and_key(tmp_path, capsys, missing):
    entry = _entry("bench_epoch[preloaded-m32-K1]", extra_info=EPOCH_INFO)
    if missing == "stats":
        del entry["stats"]
    else:
        del entry["stats"]["median"]
    bad = _bench_json(tmp_path / "bad.json", [_entry("bench_a"), entry])
    assert main(["summary", bad]) == 2
    _one_line(capsys, bad, "benchmark 2 of 2 (bench_epoch[preloaded-m32-K1])", f"no {missing!r}")


def test_compare_of_stats_that_are_not_an_object_is_one_line(tmp_path, capsys):
    bad = _bench_json(tmp_path / "bad.json", [_entry("bench_a"), {**_entry("bench_b"), "stats": [1.0, 2.0]}])
    assert main(["compare", bad, bad]) == 2
    _one_line(capsys, bad, "benchmark 2 of 2 (bench_b)", "'stats' is a list, not an object")


BROKEN_PIPELINES = """
class Base:
    name = "broken"

    def __init__(self, data, batch_size, seed, device, *, augment=False, rank=0, world_size=1):
        from persist.data.pipelines.preloaded import PreloadedPipeline

        self.inner = PreloadedPipeline(data, batch_size, seed, device, augment=augment, rank=rank,
                                       world_size=world_size)

    def __len__(self):
        return len(self.inner)

    def epoch(self, epoch):
        return self.inner.epoch(epoch)

    def describe(self):
        return {"pipeline": self.name}

    def close(self):
        self.inner.close()


class BadBuild(Base):
    def __init__(self, *args, **kwargs):
        raise ValueError("no such folder")


class BadEpoch(Base):
    def epoch(self, epoch):
        raise OSError("the disk went away")


class BadThirdBatch(Base):
    def epoch(self, epoch):
        for load, batch in enumerate(self.inner.epoch(epoch)):
            if load == 2:
                raise RuntimeError("decoder crashed")
            yield batch


class BadDescribe(Base):
    def describe(self):
        raise KeyError("size")


class Interrupted(Base):
    def epoch(self, epoch):
        raise KeyboardInterrupt


def bad_model(num_classes, image_shape):
    raise ImportError("no module named 'timm'")
"""


@pytest.fixture
def broken_pipelines(tmp_path, monkeypatch):
    import sys

    (tmp_path / "broken_pipelines.py").write_text(BROKEN_PIPELINES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_pipelines", raising=False)


@pytest.mark.parametrize(
    ("plugin", "words"),
    [
        ("BadBuild", ("BadBuild(data, batch_size, seed, device, *, augment, rank, world_size)", "ValueError: no such")),
        ("BadEpoch", ("epoch(1) raised OSError: the disk went away",)),
        ("BadThirdBatch", ("epoch(1) raised RuntimeError: decoder crashed", "at batch 3")),
        ("BadDescribe", ("describe() raised KeyError: 'size'",)),
    ],
)
def test_a_plugin_pipeline_that_raises_is_one_line_naming_it_and_the_call(
    tmp_path, capsys, broken_pipelines, plugin, words
):
    out = tmp_path / "run"
    assert main(["train", *RUN, "--pipeline", f"broken_pipelines:{plugin}", "--out", str(out)]) == 2
    _one_line(capsys, f"--pipeline broken_pipelines:{plugin}: ", *words)


def test_a_plugin_model_that_raises_is_one_line_naming_it_and_the_call(tmp_path, capsys, broken_pipelines):
    run = [flag for flag in RUN if flag not in ("--width", "0.125")]  # a width is paper-alexnet's only
    assert main(["train", *run, "--model", "broken_pipelines:bad_model", "--out", str(tmp_path / "run")]) == 2
    _one_line(capsys, "--model broken_pipelines:bad_model: bad_model(num_classes=10", "ImportError: no module named")


def test_a_plugin_pipeline_does_not_mask_ctrl_c(tmp_path, capsys, broken_pipelines):
    out = tmp_path / "run"
    assert main(["train", *RUN, "--pipeline", "broken_pipelines:Interrupted", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_builtin_pipeline_error_surfaces_as_before(tiny_config, tiny_data, monkeypatch):
    import torch

    from persist.data.pipelines import make_pipeline
    from persist.data.pipelines.preloaded import PreloadedPipeline

    def broken(self, epoch):
        raise OSError("the disk went away")

    monkeypatch.setattr(PreloadedPipeline, "epoch", broken)
    pipeline = make_pipeline(tiny_config, tiny_data, torch.device("cpu"))
    assert isinstance(pipeline, PreloadedPipeline)
    with pytest.raises(OSError, match="the disk went away"):
        pipeline.epoch(1)


def _bench_file(path, storage, slower=1.0, storage_recorded=True):
    """A smoke bench's cells as bench/ writes them: training cells with their config, pipeline-only cells with their
    storage (an older file: none), and cells that record no storage at all."""
    from dataclasses import asdict

    from persist.config import RunConfig

    data = [slower * t for t in (1.0, 1.02, 0.99, 1.01, 1.0)]
    config = asdict(RunConfig(storage=storage, train_size=1024, test_size=256, width=0.125, device="cpu"))
    loading = {"kind": "pipeline_only", "pipeline": "preloaded", "batch_size": 32, "samples": 8192, "img_per_s": 1.0}
    loading |= {"device": "cpu", "storage": storage} if storage_recorded else {"device": "cpu"}
    entries = [
        _entry("bench_epoch[preloaded-m32-K1]", data, extra_info={**EPOCH_INFO, "storage": storage, "config": config}),
        _entry("bench_pipeline_only[preloaded-m32]", data, extra_info=loading),
        _entry("bench_clock_overhead", data, extra_info={"kind": "clock_overhead", "clock": "host", "steps": 4}),
        _entry("bench_against_hand_written[dali]", data, extra_info={"kind": "vs_reference", "pipeline": "dali"}),
        _entry("bench_model_only[m32]", extra_info={"kind": "model_only", "batch_size": 32, "steps": 4}),
    ]
    for entry in entries:
        entry["stats"]["data"] = data if "model_only" not in entry["name"] else [1.0, 1.02, 0.99, 1.01, 1.0]
    path.write_text(json.dumps({"machine_info": {"persist": {"device_id": "cpu x2", "profile": "smoke"}},
                                "benchmarks": entries}))  # fmt: skip
    return str(path)


def test_cells_of_files_that_ran_other_storage_are_not_comparable_not_regressions(tmp_path, capsys):
    base = _bench_file(tmp_path / "raw.json", "raw", storage_recorded=False)
    cand = _bench_file(tmp_path / "jpeg.json", "jpeg", slower=2.0)
    assert main(["compare", base, cand, "--json"]) == 0
    verdicts = {
        r["name"].split("::")[-1]: (r["verdict"], r["reason"]) for r in json.loads(capsys.readouterr().out)["results"]
    }
    assert verdicts["bench_model_only[m32]"] == ("same", "")  # one batch already on the device: storage is not its work
    assert verdicts["bench_epoch[preloaded-m32-K1]"] == ("not comparable", "storage='raw' (candidate 'jpeg')")
    for name in ("bench_pipeline_only[preloaded-m32]", "bench_clock_overhead", "bench_against_hand_written[dali]"):
        verdict, reason = verdicts[name]
        assert verdict == "not comparable" and reason.startswith("storage='raw' (candidate 'jpeg')"), reason
        assert "the files' other cells" in reason
    assert main(["compare", base, cand]) == 0
    assert "0 regression(s) in 5 benchmark(s); 4 not comparable" in capsys.readouterr().out


def test_cells_that_record_no_storage_still_regress_between_files_of_one_storage(tmp_path, capsys):
    base = _bench_file(tmp_path / "base.json", "jpeg")
    cand = _bench_file(tmp_path / "cand.json", "jpeg", slower=2.0)
    assert main(["compare", base, cand, "--json"]) == 1
    results = json.loads(capsys.readouterr().out)["results"]
    assert sorted(r["verdict"] for r in results) == ["regression"] * 4 + ["same"]
