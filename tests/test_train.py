"""The trainer and the run folder: counts, schedules, clocks, determinism, resume, and divergence."""

import json
import math
from dataclasses import replace

import pytest
import torch

from persist.errors import DivergedError
from persist.measure.clock import HostClock
from persist.records import EPOCHS, read_records
from persist.runs.run import train_run
from persist.training.trainer import Trainer

METRICS = ("train_loss", "test_loss", "test_acc", "loads", "steps", "fresh_samples", "sample_steps")


def _metrics(records):
    return [{k: getattr(r, k) for k in METRICS} for r in records]


def test_an_epoch_is_one_pass_with_k_steps_per_load(tiny_data, tiny_config):
    config = replace(tiny_config, persistency=3, lr_schedule="linear")
    trainer = Trainer(config, tiny_data)
    seen = []
    real_step = trainer.step
    trainer.step = lambda x, y, s: (
        seen.append((x.data_ptr(), trainer.optimizer.param_groups[0]["lr"])),
        real_step(x, y, s),
    )
    record = trainer.run_epoch(1)
    assert (record.loads, record.steps, record.fresh_samples, record.sample_steps) == (8, 24, 256, 768)
    lrs = [lr for _, lr in seen]
    assert lrs == [0.001, 0.002, 0.003] * 8  # k*mu on the k-th use
    assert all(seen[i][0] == seen[i + 1][0] == seen[i + 2][0] for i in range(0, 24, 3))  # same batch K times
    assert record.clock == "host" and record.device == "cpu"
    assert record.compute_s > 0 and record.wall_s >= record.compute_s and record.eval_s > 0


def test_time_accounting_puts_a_planted_delay_in_data_time(tiny_data, tiny_config, fake_clock):
    """With a clock that only the delay moves, every second of the delay must land in data_wait_s."""
    config = replace(tiny_config, delay_ms=40.0, persistency=2)
    trainer = Trainer(config, tiny_data, clock=HostClock(now=fake_clock.now), now=fake_clock.now)
    trainer.pipeline.sleep = fake_clock.sleep
    stats = trainer.train_epoch(1)
    assert stats["data_wait_s"] == pytest.approx(8 * 0.040)
    assert stats["wall_s"] == pytest.approx(8 * 0.040)
    assert stats["compute_s"] == 0
    assert stats["gpu_idle_s"] == pytest.approx(7 * 0.040)  # the device idles through the 7 waits between loads


def test_same_seed_same_metrics(tiny_data, tiny_config, tmp_path):
    a = train_run(tiny_config, tmp_path / "a", trainer=Trainer(tiny_config, tiny_data))
    b = train_run(tiny_config, tmp_path / "b", trainer=Trainer(tiny_config, tiny_data))
    assert _metrics(a) == _metrics(b)
    c = train_run(
        replace(tiny_config, seed=1), tmp_path / "c", trainer=Trainer(replace(tiny_config, seed=1), tiny_data)
    )
    assert _metrics(a) != _metrics(c)


def test_mean_reduction_with_m_times_lr_is_the_sum(tiny_data, tiny_config):
    """Sum of per-example gradients at mu equals their mean at m*mu: the reduction is only a rescaled lr."""
    summed = Trainer(tiny_config, tiny_data).train_epoch(1)
    mean_config = replace(tiny_config, loss_reduction="mean", lr=tiny_config.lr * tiny_config.batch_size)
    averaged = Trainer(mean_config, tiny_data).train_epoch(1)
    assert averaged["train_loss"] == pytest.approx(summed["train_loss"], rel=1e-4)


def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_data, tiny_config, tmp_path):
    config = replace(tiny_config, epochs=3, persistency=2)
    whole = train_run(config, tmp_path / "whole", trainer=Trainer(config, tiny_data))

    def kill_in_epoch_3(loads):
        if len(read_records(tmp_path / "cut")) == 2 and loads == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", trainer=Trainer(config, tiny_data), on_load=kill_in_epoch_3)
    lines_before = (tmp_path / "cut" / EPOCHS).read_text()
    assert len(lines_before.splitlines()) == 2
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert manifest["status"].startswith("stopped in epoch 3")
    resumed = train_run(config, tmp_path / "cut", resume=True, trainer=Trainer(config, tiny_data))
    assert (tmp_path / "cut" / EPOCHS).read_text().startswith(lines_before)  # earlier lines untouched
    assert _metrics(resumed) == _metrics(whole)


def test_a_kill_inside_the_checkpoint_save_leaves_a_resumable_run(tiny_data, tiny_config, tmp_path, monkeypatch):
    """Killed halfway through writing epoch 2's checkpoint: a torn temporary file is left beside epoch 1's checkpoint.
    The resumed run trains epochs 2 and 3 again, to the uninterrupted run's metrics, and the leftover is gone."""
    import io

    import persist.runs.run as folder

    config = replace(tiny_config, epochs=3)
    whole = train_run(config, tmp_path / "whole", trainer=Trainer(config, tiny_data))
    real_save = torch.save

    def killed_mid_write(state, f):
        if isinstance(state, dict) and state.get("epoch") == 2:
            buffer = io.BytesIO()
            real_save(state, buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            raise KeyboardInterrupt
        real_save(state, f)

    out = tmp_path / "cut"
    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, out, trainer=Trainer(config, tiny_data))
    monkeypatch.undo()
    torn = out / (folder.CHECKPOINT + ".tmp")  # an interrupt removes it; a kill -9 would leave it (next test)
    assert not torn.exists() and torch.load(out / folder.CHECKPOINT, weights_only=True)["epoch"] == 1
    assert len(read_records(out)) == 1
    resumed = train_run(config, out, resume=True, trainer=Trainer(config, tiny_data))
    assert _metrics(resumed) == _metrics(whole) and not torn.exists()


def test_a_stale_temporary_file_is_overwritten_not_read(tmp_path):
    from persist.runs.run import save_state_atomic

    path = tmp_path / "state.pt"
    (tmp_path / "state.pt.tmp").write_bytes(b"\xff" * 100_000)  # a kill's leftover, longer than the new state
    save_state_atomic({"epoch": 7, "w": torch.arange(3)}, path)
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 7 and torch.equal(state["w"], torch.arange(3))
    assert not (tmp_path / "state.pt.tmp").exists()


def test_resume_heals_a_kill_between_checkpoint_and_record(tiny_data, tiny_config, tmp_path):
    out = tmp_path / "run"
    train_run(tiny_config, out, trainer=Trainer(tiny_config, tiny_data))
    lines = (out / EPOCHS).read_text().splitlines()
    (out / EPOCHS).write_text(lines[0] + "\n" + lines[1][:25])  # epoch 2's line torn mid-write
    records = train_run(tiny_config, out, resume=True, trainer=Trainer(tiny_config, tiny_data))
    assert [r.epoch for r in records] == [1, 2]
    assert (out / EPOCHS).read_text().splitlines() == lines


def test_resume_can_extend_a_finished_run(tiny_data, tiny_config, tmp_path):
    out = tmp_path / "run"
    train_run(tiny_config, out, trainer=Trainer(tiny_config, tiny_data))
    longer = replace(tiny_config, epochs=3)
    records = train_run(longer, out, resume=True, trainer=Trainer(longer, tiny_data))
    assert [r.epoch for r in records] == [1, 2, 3]


def test_divergence_is_an_error_and_keeps_finished_epochs(tiny_data, tiny_config, tmp_path):
    config = replace(tiny_config, lr=1e6, epochs=3)
    with pytest.raises(DivergedError, match=r"train loss became nan in epoch \d .*use a smaller --lr"):
        train_run(config, tmp_path / "run", trainer=Trainer(config, tiny_data))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"].startswith("diverged in epoch")


def test_a_timing_loop_gets_the_non_finite_loss_and_can_go_on(tiny_data, tiny_config):
    """train_epoch reports a diverged model instead of raising: the bench keeps timing and records it."""
    trainer = Trainer(replace(tiny_config, lr=1e6), tiny_data)
    first, second = trainer.train_epoch(1), trainer.train_epoch(2)
    assert not math.isfinite(first["train_loss"]) and not math.isfinite(second["train_loss"])
    assert second["steps"] == 8 and second["wall_s"] > 0
    with pytest.raises(DivergedError):
        trainer.check_finite(second)


def test_batch_larger_than_training_set_is_refused(tiny_data, tiny_config):
    from persist.errors import ConfigError

    with pytest.raises(ConfigError, match="batch_size=512 is not allowed: the training set has 256 samples"):
        Trainer(replace(tiny_config, batch_size=512), tiny_data)


def test_missing_cuda_device_is_refused():
    from persist.errors import ConfigError
    from persist.training.device import resolve_device

    with pytest.raises(ConfigError, match=r"device='cuda:7' does not exist: this machine has \d+ CUDA device"):
        resolve_device("cuda:7")
    assert resolve_device("cpu") == torch.device("cpu")


def test_the_cuda_device_is_decided_once_and_made_current(monkeypatch):
    """cuda:N becomes the current device where it is decided: CUDA events record on the current device's stream."""
    from persist.training.device import resolve_device

    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert made_current == [torch.device("cuda", 1), torch.device("cuda", 0)]
    made_current.clear()
    assert resolve_device("cpu") == torch.device("cpu") and made_current == []


def test_math_settings_read_tf32_and_autotuning_without_warnings(monkeypatch):
    """Through fp32_precision where torch has it (warnings are errors here), allow_tf32 only where it does not; the
    machine info of a bench carries them."""
    from persist.measure.machine import machine_info, math_settings

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    settings = math_settings()
    assert settings["tf32_api"] == "fp32_precision" and settings["cudnn_benchmark"] is True
    assert settings["cudnn_conv_fp32_precision"] in ("tf32", "ieee", "bf16", "none")
    assert machine_info(torch.device("cpu"))["math"] == settings
    monkeypatch.setattr(torch.backends.cudnn, "conv", None, raising=False)  # an older torch
    assert math_settings()["tf32_api"] == "allow_tf32" and isinstance(math_settings()["cudnn_allow_tf32"], bool)


@pytest.mark.slow
def test_test_loss_falls_on_real_digits(tmp_path):
    """scikit-learn's digits are real images: the paper's setup ([0,1] inputs, mu = 0.001 on a summed gradient)
    must leave its initial plateau and learn them. The plateau lasts about 500 steps here (epochs 1 to 3 at m=16,
    K=2, 180 steps each), so 7 epochs leave a margin of three."""
    from persist.config import RunConfig

    config = RunConfig(dataset="digits", batch_size=16, persistency=2, width=0.25, epochs=7, device="cpu")
    records = train_run(config, tmp_path / "digits")
    losses = [r.test_loss for r in records]
    assert losses[-1] < 0.5 * losses[0], losses
    assert records[-1].test_acc > 0.8


def test_evaluations_fall_at_the_same_fresh_sample_counts_for_every_k(tiny_data, tiny_config, tmp_path):
    """--eval-every counts fresh samples, so K=1 and K=5 are evaluated at the same data consumed, and evaluation
    time stays out of the training clocks."""
    from persist.records import read_evals

    seen = {}
    for k in (1, 5):
        config = replace(tiny_config, persistency=k, eval_every=64, epochs=2)  # 256 images, m=32: every 2 loads
        records = train_run(config, tmp_path / f"K{k}", trainer=Trainer(config, tiny_data))
        evals = read_evals(tmp_path / f"K{k}")
        seen[k] = [(e.epoch, e.fresh_samples_seen) for e in evals]
        assert [e.steps_seen for e in evals] == [k * e.fresh_samples_seen // 32 for e in evals]
        assert [e.sample_steps_seen for e in evals] == [k * e.fresh_samples_seen for e in evals]
        train_s = [e.train_s for e in evals]
        assert train_s == sorted(train_s) and train_s[0] == 0
        assert train_s[4] == pytest.approx(records[0].wall_s) and train_s[-1] == pytest.approx(
            sum(r.wall_s for r in records)
        )
        assert evals[-1].test_loss == records[-1].test_loss  # the epoch's end is one evaluation, not two
    assert seen[1] == seen[5] == [(0, 0), (1, 64), (1, 128), (1, 192), (1, 256), (2, 320), (2, 384), (2, 448), (2, 512)]


def test_an_evaluation_inside_an_epoch_is_not_training_time(tiny_data, tiny_config, fake_clock):
    """With a clock that only the delay and the evaluation move, the epoch's wall time is the delay alone."""
    config = replace(tiny_config, delay_ms=40.0, eval_every=128)
    trainer = Trainer(config, tiny_data, clock=HostClock(now=fake_clock.now), now=fake_clock.now)
    trainer.pipeline.sleep = fake_clock.sleep
    real_evaluate = trainer.evaluate

    def slow_evaluate():
        fake_clock.sleep(5.0)  # an evaluation that takes 5 s
        return real_evaluate()

    trainer.evaluate = slow_evaluate
    rows = []
    stats = trainer.train_epoch(1, on_eval=rows.append)
    assert [r.fresh_samples_seen for r in rows] == [128]  # the epoch's end (256) is run_epoch's
    assert stats["wall_s"] == pytest.approx(8 * 0.040) and rows[0].train_s == pytest.approx(4 * 0.040)
    assert stats["gpu_idle_s"] == pytest.approx(
        6 * 0.040
    )  # 7 gaps between loads, the one across the evaluation not idle


def test_resume_drops_the_interrupted_epochs_evaluations(tiny_data, tiny_config, tmp_path):
    from persist.records import read_evals

    config = replace(tiny_config, epochs=2, eval_every=64)
    whole = tmp_path / "whole"
    train_run(config, whole, trainer=Trainer(config, tiny_data))

    def kill_in_epoch_2(loads):
        if len(read_records(tmp_path / "cut")) == 1 and loads == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", trainer=Trainer(config, tiny_data), on_load=kill_in_epoch_2)
    assert [e.epoch for e in read_evals(tmp_path / "cut")][-1] == 2  # epoch 2's first evaluations were written
    train_run(config, tmp_path / "cut", resume=True, trainer=Trainer(config, tiny_data))
    cut, full = read_evals(tmp_path / "cut"), read_evals(whole)
    assert [(e.epoch, e.fresh_samples_seen, e.test_loss) for e in cut] == [
        (e.epoch, e.fresh_samples_seen, e.test_loss) for e in full
    ]


def test_a_sample_step_budget_gives_every_k_the_same_work(tiny_data, tiny_config, tmp_path):
    """256 images, m=32: K=1 spends 256 sample-steps an epoch, K=5 spends 1,280. A budget of 800 stops both
    after the load that reaches it, mid-epoch if need be."""
    results = {}
    for k in (1, 5):
        config = replace(tiny_config, persistency=k, budget_sample_steps=800, epochs=1000)
        records = train_run(config, tmp_path / f"K{k}", trainer=Trainer(config, tiny_data))
        results[k] = [(r.loads, r.budget_met) for r in records]
        assert sum(r.sample_steps for r in records) == 800
        manifest = json.loads((tmp_path / f"K{k}" / "manifest.json").read_text())
        assert manifest["status"] == "finished (budget spent)"
    assert results[1] == [(8, False), (8, False), (8, False), (1, True)]
    assert results[5] == [(5, True)]


def test_a_time_budget_counts_training_seconds_only(tiny_data, tiny_config, tmp_path, fake_clock):
    config = replace(tiny_config, delay_ms=40.0, budget_s=0.5, epochs=1000, eval_every=64)
    trainer = Trainer(config, tiny_data, clock=HostClock(now=fake_clock.now), now=fake_clock.now)
    trainer.pipeline.sleep = fake_clock.sleep
    records = train_run(config, tmp_path / "run", trainer=trainer)
    assert [r.loads for r in records] == [8, 5]  # 13 loads x 40 ms = 0.52 s: the load that passes 0.5 s is the last
    assert sum(r.wall_s for r in records) == pytest.approx(0.52)


def test_a_spent_budget_is_finished_and_a_larger_one_resumes(tiny_data, tiny_config, tmp_path):
    out = tmp_path / "run"
    small = replace(tiny_config, budget_sample_steps=320, epochs=1000)
    train_run(small, out, trainer=Trainer(small, tiny_data))
    again = train_run(small, out, resume=True, trainer=Trainer(small, tiny_data))
    assert sum(r.sample_steps for r in again) == 320 and len(read_records(out)) == 2
    larger = replace(small, budget_sample_steps=640)
    records = train_run(larger, out, resume=True, trainer=Trainer(larger, tiny_data))
    assert sum(r.sample_steps for r in records) == 640


def test_a_time_budget_is_refused_under_torchrun(tiny_data, tiny_config):
    from persist.errors import ConfigError
    from persist.training.dist import DistContext

    with pytest.raises(ConfigError, match=r"budget_s=60 is not allowed under torchrun: .* use a sample-steps budget"):
        Trainer(replace(tiny_config, budget_s=60), tiny_data, dist=DistContext(rank=0, world_size=2))
