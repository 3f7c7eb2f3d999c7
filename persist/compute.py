"""`--compute real | emulated:SPEC`: what a step is. Emulated, forward, backward and the optimizer are replaced by a
host wait of an accelerator's step time (MLPerf Storage's method: its DLIO benchmark sleeps the measured step time),
so a loader can be sized for a GPU that is not in the machine (docs/emulated.md).

SPEC is one of: a profile's name (the table below, or one registered with `register_compute_profile`); a plug-in
`package.module:attr` naming a ComputeProfile; a number, `12.5ms@256` (12.5 ms per step at m = 256); or a persist run
folder recorded on a GPU, whose compute per step is taken (resolved when the run starts: persist/training/emulated.py).
Every step time scales in proportion to m: a profile is a time per sample-step, stated at the batch size its source
measured.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from persist.errors import ConfigError
from persist.registry import Registry

REAL = "real"
EMULATED = "emulated:"


@dataclass(frozen=True)
class ComputeProfile:
    """An accelerator's training step: `step_s` seconds per step at `batch_size`, and where that figure comes from."""

    name: str
    accelerator: str
    model: str
    image_size: int | None
    precision: str
    step_s: float  # seconds per step at batch_size
    batch_size: int
    source: str

    def step_s_at(self, batch_size: int) -> float:
        """Seconds per step at another m, in proportion to m (the same seconds per sample-step)."""
        return self.step_s * (batch_size / self.batch_size)

    def describe(self, batch_size: int) -> dict:
        """What the manifest and the bench's extra_info record: the profile and the step time used at `batch_size`."""
        return {**asdict(self), "step_s_used": self.step_s_at(batch_size), "batch_size_used": batch_size}


MLPERF_RESNET50_H100 = ComputeProfile(
    "h100-resnet50",
    "NVIDIA H100",
    "resnet50",
    224,
    "mixed",
    0.224,
    400,
    "MLPerf Storage's ResNet-50 workload for an H100 (mlcommons/storage, storage-conf/workload/resnet50_h100.yaml): "
    "batch_size 400, computation_time 0.224 s per step, about 1,786 samples/s per accelerator",
)
DLE_RESNET50_A100 = ComputeProfile(
    "a100-resnet50-amp",
    "NVIDIA A100-80GB",
    "resnet50 v1.5",
    224,
    "amp",
    256 / 2470,
    256,
    "NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5: 2,470 img/s training on one "
    "A100-80GB with AMP; stated here at m = 256 as 256/2470 s per step",
)
PAPER_GTX1080TI = ComputeProfile(
    "gtx1080ti-paper-alexnet",
    "NVIDIA GTX 1080 Ti",
    "paper-alexnet",
    32,
    "fp32",
    2.08e-3,
    32,
    "derived from the paper's text (Faster SGD training by minibatch persistency, Section 2.2 and Figure 1): 100 "
    "epochs of CIFAR-10 at m = 32 (50,000/32 = 1,562.5 loads per epoch, 156,250 in all) took about 700 s at K = 1 and "
    "2,000 s at K = 5; so 4 extra steps per load cost 1,300 s: step = 1,300/(4 x 156,250) = 2.08 ms, and a load "
    "700/156,250 - 2.08 ms = 2.40 ms; the K = 5 / K = 1 time ratio is 2,000/700 = 2.9",
)

COMPUTE_PROFILES = Registry(
    "compute profile",
    "--compute emulated:",
    "a persist.compute.ComputeProfile",
    lambda value: isinstance(value, ComputeProfile),
)
for _profile in (MLPERF_RESNET50_H100, DLE_RESNET50_A100, PAPER_GTX1080TI):
    COMPUTE_PROFILES.register(_profile.name, _profile, _profile.source.split(":")[0])


def register_compute_profile(profile: ComputeProfile) -> None:
    """Make `profile` available as --compute emulated:NAME."""
    if not isinstance(profile, ComputeProfile):
        raise ConfigError(f"register_compute_profile({profile!r}): expected a persist.compute.ComputeProfile")
    COMPUTE_PROFILES.register(profile.name, profile, profile.source.split(":")[0])


_NUMBER = re.compile(r"^(?P<value>\d+(\.\d*)?|\.\d+)(?P<unit>ms|s)@(?P<m>\d+)$")
ALLOWED = (
    "real, or emulated:NAME (a profile: {names}), emulated:package.module:attr (a ComputeProfile), "
    "emulated:12.5ms@256 (a step time at a batch size) or emulated:RUN_DIR (a persist run on a GPU)"
)


def allowed_text() -> str:
    return ALLOWED.format(names=", ".join(COMPUTE_PROFILES.names()))


def number_profile(spec: str) -> ComputeProfile | None:
    """`12.5ms@256` -> a profile of 12.5 ms per step at m = 256; None where spec is not of that form."""
    found = _NUMBER.match(spec)
    if found is None:
        return None
    step_s = float(found["value"]) / (1000 if found["unit"] == "ms" else 1)
    m = int(found["m"])
    if not step_s > 0 or m < 1:
        raise ConfigError(f"compute='emulated:{spec}' is not allowed: use a step time > 0 at a batch size >= 1")
    return ComputeProfile(spec, "given", "given", None, "given", step_s, m, f"given on the command line: {spec}")


def emulated_spec(compute: str) -> str | None:
    """The SPEC of `emulated:SPEC`; None for real. Refuses anything else in one line."""
    if compute == REAL:
        return None
    if isinstance(compute, str) and compute.startswith(EMULATED) and compute[len(EMULATED) :].strip():
        return compute[len(EMULATED) :]
    raise ConfigError(f"compute={compute!r} is not allowed: use {allowed_text()}")


def named_profile(spec: str) -> ComputeProfile | None:
    """The profile `spec` names (a registered name, a plug-in, a number); None where it names none: a run folder."""
    if spec in COMPUTE_PROFILES.entries:
        return COMPUTE_PROFILES.get(spec)
    found = number_profile(spec)
    if found is not None:
        return found
    module, sep, attr = spec.partition(":")
    if sep and module and attr and "/" not in module:  # package.module:attr, imported now
        return COMPUTE_PROFILES.get(spec)
    return None


def check_compute(compute: str) -> None:
    """RunConfig's check: the form, a profile's name, a number, a plug-in (imported). A run folder is read when the
    run starts, so a manifest that names one is read back even where the folder is gone."""
    spec = emulated_spec(compute)
    if spec is not None:
        named_profile(spec)
