"""CUDA paths whose logic runs on a CPU too: fp16's scaler without a host read per step, TF32 set so that both of
torch's readers agree, a real torch.compile, and DDP's device binding."""

from dataclasses import replace

import pytest
import torch

from persist.training import dist
from persist.training.optim import PaperSGD
from persist.training.precision import Precision, _allow_tf32, tf32_state


def _no_host_reads(monkeypatch):
    """Any read of a tensor's value on the host raises: .item(), bool(), .tolist()."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a tensor was read on the host")

    for name in ("item", "__bool__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in ((3, 4), (4,))]


def test_paper_sgd_declares_amp_scaling_so_the_scaler_reads_nothing_on_the_host():
    assert PaperSGD._step_supports_amp_scaling is True


@pytest.mark.parametrize("grad_scale", [None, 8.0])
def test_a_scaled_step_matches_the_paper_update_and_an_inf_step_changes_nothing(monkeypatch, grad_scale):
    reference, scaled = _params(), _params()
    ref_opt = PaperSGD(reference, lr=0.1, momentum=0.5)
    opt = PaperSGD(scaled, lr=0.1, momentum=0.5)
    for step in range(3):
        for p, q in zip(reference, scaled, strict=True):
            grad = torch.full_like(p, 0.25 * (step + 1))
            p.grad = grad.clone()
            q.grad = grad * grad_scale if grad_scale else grad.clone()
        ref_opt.step()
        opt.found_inf = torch.zeros(1)  # what GradScaler.step sets for one call
        if grad_scale:
            opt.grad_scale = torch.tensor(grad_scale)
        with monkeypatch.context() as patch:
            _no_host_reads(patch)
            opt.step()
        for p, q in zip(reference, scaled, strict=True):
            torch.testing.assert_close(q, p)
    before = [p.detach().clone() for p in scaled]
    velocities = [opt.state[p]["velocity"].clone() for p in scaled]
    for p in scaled:
        p.grad = torch.full_like(p, float("inf"))
    opt.found_inf = torch.ones(1)
    with monkeypatch.context() as patch:
        _no_host_reads(patch)
        opt.step()
    for p, b, v in zip(scaled, before, velocities, strict=True):
        assert torch.equal(p.detach(), b) and torch.equal(opt.state[p]["velocity"], v)


def test_an_fp16_step_through_the_scaler_reads_no_tensor_on_the_host(monkeypatch):
    model = torch.nn.Linear(4, 2)
    precision = Precision("fp16", torch.device("cpu"))
    optimizer = PaperSGD(model.parameters(), lr=0.01, momentum=0.5)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    weight = model.weight.detach().clone()
    with monkeypatch.context() as patch:
        _no_host_reads(patch)  # torch's own GradScaler calls .item() per step for an optimizer without the flag
        loss = torch.nn.functional.cross_entropy(model(x), y)
        precision.backward_and_step(loss, optimizer)
    assert not torch.equal(model.weight.detach(), weight)  # the step happened


@pytest.fixture
def restore_tf32():
    state = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    precision = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(precision)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = state


def test_tf32_is_set_so_that_the_legacy_and_the_new_reader_agree(restore_tf32):
    _allow_tf32()
    state = tf32_state()  # raises where the two APIs were mixed: inductor reads the legacy flags
    assert state["matmul_allow_tf32"] and state["cudnn_allow_tf32"]
    assert state["float32_matmul_precision"] == "high"
    if "matmul_fp32_precision" in state:
        assert state["matmul_fp32_precision"] == "tf32"


@pytest.mark.slow
def test_compile_for_real_on_the_cpu_trains_and_keeps_the_numbers(tiny_data, tiny_config):
    """torch.compile with inductor on the CPU (it needs a C compiler and Python's headers, as Triton does on CUDA)."""
    import shutil
    import sysconfig
    from pathlib import Path

    if shutil.which("cc") is None or not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("torch.compile's CPU backend needs a C compiler and Python's headers")
    from persist.training.trainer import Trainer

    config = replace(tiny_config, epochs=1, compile=True, train_size=64, batch_size=32)
    compiled = Trainer(config, tiny_data)
    plain = Trainer(replace(config, compile=False), tiny_data)
    assert compiled.compile_s is not None and compiled.compile_s > 0
    assert compiled.train_epoch(1)["train_loss"] == pytest.approx(plain.train_epoch(1)["train_loss"], rel=1e-3)
    compiled.close(), plain.close()


def test_ddp_on_cuda_binds_the_rank_to_its_device(monkeypatch):
    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.setdefault("set_device", device))
    init = lambda backend, **options: calls.update(backend=backend, **options)  # noqa: E731
    monkeypatch.setattr(dist.torch_dist, "init_process_group", init)
    context = dist.from_environment("cuda")
    assert calls["backend"] == "nccl" and calls["device_id"] == torch.device("cuda", 1)
    assert (context.rank, context.local_rank) == (1, 1)
    calls.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    dist.from_environment("cpu")
    assert calls["backend"] == "gloo" and "device_id" not in calls


def test_the_example_copies_each_batch_once_per_load_and_outside_the_step(tmp_path, monkeypatch):
    """examples/own_loop.py: one copy per load (not one per use), queued before meter.step, so compute holds none."""
    import importlib.util
    from pathlib import Path

    import persist

    path = Path(__file__).resolve().parents[1] / "examples" / "own_loop.py"
    spec = importlib.util.spec_from_file_location("own_loop_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = [(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))) for _ in range(3)]
    meter = persist.Meter(tmp_path / "run", device="cpu")
    copies, original_to, in_step, step = [], torch.Tensor.to, [False], meter.step

    def to(tensor, *args, **kwargs):  # each copy: non-blocking? inside meter.step?
        copies.append((kwargs.get("non_blocking", False), in_step[0]))
        return original_to(tensor, *args, **kwargs)

    def marked_step(*args, **kwargs):
        context = step(*args, **kwargs)

        class Marked:
            def __enter__(self):
                in_step[0] = True
                return context.__enter__()

            def __exit__(self, *exc):
                in_step[0] = False
                return context.__exit__(*exc)

        return Marked()

    monkeypatch.setattr(meter, "step", marked_step)
    monkeypatch.setattr(torch.Tensor, "to", to)
    args = example.parse(["--out", str(tmp_path / "unused"), "--k", "2", "--device", "cpu"])
    example.train_epoch(meter, 1, model, optimizer, loader, torch.device("cpu"), args)
    monkeypatch.undo()
    meter.close()
    assert copies == [(True, False)] * (2 * len(loader))  # x and y, once per load, non-blocking, outside the step


class _FakeEvent:
    def __init__(self, **_):
        self.streams = []

    def record(self, stream=None):
        self.streams.append(stream)


def test_events_are_recorded_on_the_run_devices_stream_not_the_current_devices(monkeypatch):
    """A Meter(device="cuda:1") with cuda:0 current must time cuda:1's stream (it timed cuda:0's empty one)."""
    from persist.measure.clock import CudaEventClock
    from persist.training.adaptive import StepDone

    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream of {device}")
    monkeypatch.setattr(torch.cuda, "device", lambda device: __import__("contextlib").nullcontext())
    device = torch.device("cuda", 1)
    clock = CudaEventClock(device)
    clock.begin_epoch(1)
    clock.step_start(), clock.step_end(), clock.step_start()  # a third record grows the pool
    assert all(event.streams[-1] == "stream of cuda:1" for event in clock.pool) and len(clock.pool) == 3
    done = StepDone(device)
    done.record()
    assert done.event.streams == ["stream of cuda:1"]


def test_cudnn_benchmark_is_a_recorded_option_refused_with_deterministic(tmp_path):
    from persist.cli.main import main
    from persist.config import RunConfig
    from persist.errors import ConfigError
    from persist.records import read_manifest
    from persist.training.device import set_determinism

    with pytest.raises(ConfigError, match="cudnn_benchmark=True is not allowed with deterministic=True"):
        RunConfig(cudnn_benchmark=True, deterministic=True)
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        assert set_determinism(torch.device("cuda"), False, True)["cudnn_benchmark"] is True  # flags only: no GPU
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = saved
    small = ["--train-size", "64", "--test-size", "32", "--width", "0.125", "-m", "32", "--device", "cpu", "--quiet"]
    assert main(["train", *small, "--epochs", "1", "--cudnn-benchmark", "--out", str(tmp_path / "run")]) == 0
    assert read_manifest(tmp_path / "run")["config"]["cudnn_benchmark"] is True
