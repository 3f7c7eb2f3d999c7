"""The NVML sampler against a fake NVML module: summaries, fallbacks, and that it always stops."""

import sys
from types import SimpleNamespace

import pytest
import torch

from persist.measure.nvml import NvmlSampler, UnavailableSampler, import_pynvml, open_sampler


class FakeNVMLError(Exception):
    pass


def fake_nvml(samples_supported=True, pcie_supported=True):
    state = {"energy_mj": 1_000_000}

    def energy(handle):
        state["energy_mj"] += 50_000  # 50 J between the two readings
        return state["energy_mj"]

    def samples(handle, kind, since_us):
        if not samples_supported:
            raise FakeNVMLError("not supported")
        stamp = since_us + 1
        values = [SimpleNamespace(timeStamp=since_us - 10, sampleValue=SimpleNamespace(uiVal=0))]  # before start
        values += [
            SimpleNamespace(timeStamp=stamp + i, sampleValue=SimpleNamespace(uiVal=v))
            for i, v in enumerate([90, 100, 80])
        ]
        return kind, values

    def pcie(handle, counter):
        if not pcie_supported:
            raise FakeNVMLError("not supported")
        return 1000 if counter == 0 else 2000

    return SimpleNamespace(
        NVMLError=FakeNVMLError,
        NVML_CLOCK_SM=1,
        NVML_PCIE_UTIL_TX_BYTES=0,
        NVML_PCIE_UTIL_RX_BYTES=1,
        NVML_GPU_UTILIZATION_SAMPLES=1,
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=70),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=4 << 30),
        nvmlDeviceGetPowerUsage=lambda h: 300_000,
        nvmlDeviceGetClockInfo=lambda h, c: 1980,
        nvmlDeviceGetPcieThroughput=pcie,
        nvmlDeviceGetTotalEnergyConsumption=energy,
        nvmlDeviceGetSamples=samples,
    )


def test_summary_from_driver_samples():
    sampler = NvmlSampler(fake_nvml(), handle="gpu0", interval_s=0.001)
    sampler.start()
    summary = sampler.stop()
    assert summary["available"] and summary["util_source"] == "nvmlDeviceGetSamples"
    assert summary["util_samples"] == 3 and summary["util_mean_pct"] == 90 and summary["util_p50_pct"] == 90
    assert summary["mem_used_peak_bytes"] == 4 << 30 and summary["mem_samples"] >= 1
    assert summary["power_mean_w"] == 300 and summary["sm_clock_mean_mhz"] == 1980
    assert summary["pcie_rx_mean_kb_per_s"] == 2000 and summary["pcie_tx_mean_kb_per_s"] == 1000
    assert summary["energy_j"] == pytest.approx(50.0)
    assert "1/6 s to 1 s" in summary["util_note"]


def test_pcie_throughput_is_polled_rarely_or_never():
    calls = {"pcie": 0}
    nvml = fake_nvml()
    pcie = nvml.nvmlDeviceGetPcieThroughput

    def counted(handle, counter):
        calls["pcie"] += 1
        return pcie(handle, counter)

    nvml.nvmlDeviceGetPcieThroughput = counted
    sampler = NvmlSampler(nvml, "gpu0", pcie_every=20)
    sampler.start()
    sampler._stop.set(), sampler._thread.join()  # stop the thread: poll by hand from here
    calls["pcie"], sampler.polls = 0, 0
    for _ in range(40):
        sampler.poll_once()
    assert calls["pcie"] == 4  # polls 0 and 20, rx and tx each
    assert len(sampler.values["power_w"]) >= 40 and len(sampler.values["pcie_rx_kb_per_s"]) >= 2
    summary = sampler.stop()
    assert summary["pcie_every_polls"] == 20 and summary["pcie_rx_mean_kb_per_s"] == 2000
    never = NvmlSampler(nvml, "gpu0", interval_s=0.001, pcie_every=0)
    calls["pcie"] = 0
    never.start()
    summary = never.stop()
    assert calls["pcie"] == 0 and summary["pcie_rx_samples"] == 0 and summary["power_samples"] >= 1


def test_falls_back_to_polling_and_records_unsupported_queries():
    sampler = NvmlSampler(fake_nvml(samples_supported=False, pcie_supported=False), "gpu0", interval_s=0.001)
    sampler.start()
    summary = sampler.stop()
    assert summary["util_source"] == "polling" and summary["util_mean_pct"] == 70
    assert summary["pcie_rx_samples"] == 0 and summary["pcie_rx_mean_kb_per_s"] is None
    assert summary["unsupported"] == ["pcie_rx_kb_per_s", "pcie_tx_kb_per_s"]


def test_sampler_stops_even_when_the_epoch_raises(tiny_data, tiny_config):
    from persist.training.trainer import Trainer

    sampler = NvmlSampler(fake_nvml(), "gpu0", interval_s=0.001)
    trainer = Trainer(tiny_config, tiny_data, sampler=sampler)

    def broken_epoch(epoch):
        raise OSError("disk gone")
        yield

    trainer.pipeline.epoch = broken_epoch
    with pytest.raises(Exception, match="disk gone"):
        trainer.train_epoch(1)
    assert sampler._thread is None


def test_no_gpu_is_a_recorded_reason():
    summary = open_sampler(torch.device("cpu")).stop()
    assert summary == {"available": False, "reason": "no GPU sampling: the run is on cpu"}
    assert UnavailableSampler("x").stop()["reason"] == "x"


LEGACY_PYNVML = """
import warnings
warnings.warn("The pynvml package is deprecated. Please install nvidia-ml-py instead.", FutureWarning)
class NVMLError(Exception):
    pass
def nvmlInit():
    raise NVMLError("Driver Not Loaded")
"""


def test_the_legacy_pynvml_wrappers_future_warning_is_recorded_not_raised(tmp_path, monkeypatch):
    """The `pynvml` package (not nvidia-ml-py) warns on import; warnings are errors in this suite."""
    (tmp_path / "pynvml.py").write_text(LEGACY_PYNVML)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", None)  # undo restores the real module, or its absence
    del sys.modules["pynvml"]
    module, import_warnings = import_pynvml()
    assert module.__file__ == str(tmp_path / "pynvml.py")
    assert import_warnings == ["FutureWarning: The pynvml package is deprecated. Please install nvidia-ml-py instead."]
    del sys.modules["pynvml"]  # import it again, through open_sampler
    reason = open_sampler(torch.device("cuda")).stop()["reason"]
    assert reason.startswith("no GPU sampling: NVML failed: Driver Not Loaded (import warned: FutureWarning: The")


@pytest.mark.gpu
def test_real_nvml_on_a_gpu():
    sampler = open_sampler(torch.device("cuda"), interval_s=0.01)
    sampler.start()
    a = torch.randn(4096, 4096, device="cuda")
    for _ in range(50):
        a = a @ a / 64
    torch.cuda.synchronize()
    summary = sampler.stop()
    assert summary["available"], summary
    assert summary["mem_used_peak_bytes"] > 64 << 20 and summary["power_samples"] > 0
