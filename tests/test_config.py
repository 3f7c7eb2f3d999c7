import pytest

from persist.config import RunConfig, with_profile
from persist.errors import ConfigError
from persist.records import from_dict


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("persistency", 0, "integer >= 1"),
        ("batch_size", 0, "integer >= 1"),
        ("epochs", 0, "integer >= 1"),
        ("lr", 0.0, "> 0"),
        ("lr", -0.1, "> 0"),
        ("lr", float("nan"), "> 0"),
        ("pipeline", "tfdata", "preloaded, torchvision, dali"),
        ("dataset", "imagenet", "synthetic, cifar10, digits"),
        ("lr_schedule", "cosine", "constant, linear"),
        ("loss_reduction", "max", "sum, mean"),
        ("device", "tpu", "auto, cpu, cuda or cuda:N"),
        ("momentum", 1.0, "0 <= momentum < 1"),
        ("delay_ms", -1.0, ">= 0"),
        ("width", 0.0, "> 0"),
        ("train_size", 0, "integer >= 1"),
        ("normalization", "zscore", "unit, symmetric, standardize"),
    ],
)
def test_bad_values_name_the_value_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as error:
        RunConfig(**{field: value})
    message = str(error.value)
    assert f"{field}={value!r}" in message and allowed in message
    assert "\n" not in message


def test_pipeline_options_are_refused_for_other_pipelines():
    with pytest.raises(ConfigError, match=r"num_workers=2 applies only to --pipeline torchvision, not to preloaded"):
        RunConfig(pipeline="preloaded", num_workers=2)
    with pytest.raises(ConfigError, match=r"dali_threads=4 applies only to --pipeline dali, not to torchvision"):
        RunConfig(pipeline="torchvision", dali_threads=4)
    assert RunConfig(pipeline="torchvision", num_workers=2, prefetch_factor=4).prefetch_factor == 4
    assert RunConfig(pipeline="dali", dali_threads=2).dali_threads == 2


def test_worker_only_options_need_workers():
    import torch

    from persist.data.settings import loader_settings

    with pytest.raises(ConfigError, match="prefetch_factor=2 needs num_workers >= 1"):
        RunConfig(pipeline="torchvision", prefetch_factor=2, num_workers=0)
    with pytest.raises(ConfigError, match="persistent_workers=True needs num_workers >= 1"):
        RunConfig(pipeline="torchvision", persistent_workers=True, num_workers=0)
    # with num_workers unset the machine decides: 0 on a CPU device, so a prefetch factor is refused there ...
    config = RunConfig(pipeline="torchvision", prefetch_factor=2)
    with pytest.raises(ConfigError, match=r"prefetch_factor=2 needs num_workers >= 1 \(the default on a cpu device"):
        loader_settings(config, torch.device("cpu"), cpu_count=16)
    # ... and workers on CUDA, where the flag then applies
    assert loader_settings(config, torch.device("cuda"), cpu_count=16)[0]["prefetch_factor"] == 2


def test_loader_settings_follow_the_machine_unless_a_flag_says_otherwise():
    import torch

    from persist.data.settings import loader_settings

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    tv, dali, chosen = loader_settings(RunConfig(pipeline="torchvision"), cuda, world_size=1, cpu_count=16)
    assert tv == {"num_workers": 8, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 2}
    assert chosen == "16 cores, 1 rank(s) on cuda; set by flag: none"
    tv, _, _ = loader_settings(RunConfig(pipeline="torchvision"), cuda, world_size=4, cpu_count=16)
    assert tv["num_workers"] == 3  # 4 cores per rank, one kept for the training process
    assert loader_settings(RunConfig(pipeline="dali"), cuda, cpu_count=16)[1]["num_threads"] == 4
    assert loader_settings(RunConfig(pipeline="dali"), cuda, cpu_count=2)[1]["num_threads"] == 2
    tv, dali, _ = loader_settings(RunConfig(pipeline="torchvision"), cpu, cpu_count=16)
    assert tv == {"num_workers": 0, "pin_memory": False, "persistent_workers": False, "prefetch_factor": None}
    assert dali["num_threads"] == 1
    given = RunConfig(pipeline="torchvision", num_workers=2, pin_memory=False)
    tv, _, chosen = loader_settings(given, cuda, cpu_count=16)
    assert tv["num_workers"] == 2 and tv["pin_memory"] is False and chosen.endswith("num_workers, pin_memory")


def test_defaults_are_the_papers():
    config = RunConfig()
    assert (config.lr, config.momentum, config.loss_reduction, config.width) == (0.001, 0.5, "sum", 1.0)
    assert config.persistency == 1 and config.lr_schedule == "constant"


def test_config_is_frozen_and_round_trips_through_its_dict():
    config = RunConfig(batch_size=512, persistency=5, lr_schedule="linear")
    with pytest.raises(AttributeError):
        config.batch_size = 3
    assert from_dict(config.as_dict()) == config
    with pytest.raises(ConfigError, match="unknown config field"):
        from_dict({**config.as_dict(), "warp_speed": 9})


def test_profiles_set_sizes():
    assert with_profile(RunConfig(), "paper").train_size == 50_000
    assert with_profile(RunConfig(), "smoke").width < 1
    with pytest.raises(ConfigError, match="profile='huge'"):
        with_profile(RunConfig(), "huge")


def test_differences_lists_changed_fields():
    a, b = RunConfig(batch_size=32), RunConfig(batch_size=64, epochs=9)
    assert a.differences(b) == ["batch_size", "epochs"]
    assert a.differences(b, ignore=("epochs",)) == ["batch_size"]


def test_a_manifest_from_before_a_field_reads_as_the_run_was_made():
    old = RunConfig().as_dict()
    del old["normalization"]  # written before --normalization existed, when inputs were standardized
    assert from_dict(old).normalization == "standardize"
    assert from_dict(RunConfig().as_dict()).normalization == "unit"
