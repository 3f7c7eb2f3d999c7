"""Checks of one config value each: one line naming the bad value and what is allowed (a ConfigError)."""

from __future__ import annotations

import math

from persist.errors import ConfigError
from persist.registry import Registry


def registered(name: str, value: str, registry: Registry) -> None:
    """A built-in name is known without importing it; anything else is resolved now (a plug-in is imported), so a
    bad one is refused before any work starts."""
    if not isinstance(value, str):
        raise ConfigError(f"{name}={value!r} is not allowed: choose one of {registry.choices()}")
    if value not in registry.entries:
        registry.get(value)


def one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed: choose one of {', '.join(allowed)}")


def at_least(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} is not allowed: use an integer >= {low}")


def positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} is not allowed: use a finite number > 0")


def check_device(device: str) -> None:
    if device in ("auto", "cpu", "cuda"):
        return
    if device.startswith("cuda:") and device[5:].isdigit():
        return
    raise ConfigError(f"device={device!r} is not allowed: use auto, cpu, cuda or cuda:N")
