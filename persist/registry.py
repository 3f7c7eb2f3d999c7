"""A name -> thing registry that also takes the user's own thing, named `package.module:attr` (after ffcv's loader
registry).

Built-ins are registered by the same `module:attr` form and imported only when named, so listing the names of the
pipelines never imports DALI. A plug-in is imported when a config names it; what it holds is checked against what its
flag expects, and a wrong one is one line (PluginError) that names it and says what was expected. `provenance` gives
a plug-in's module file and its sha256, which the manifest and the bench's extra_info record.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from persist.errors import ConfigError, PluginError


@dataclass
class Registry:
    kind: str  # "pipeline": what one entry is, for messages
    flag: str  # "--pipeline": where the user names one
    expected: str  # what a plug-in must be: "a class that implements persist's Pipeline protocol"
    accepts: Callable[[object], bool] = callable  # is the imported object of the right kind?
    entries: dict[str, str] = field(default_factory=dict)  # name -> "module:attr", imported when named
    helps: dict[str, str] = field(default_factory=dict)  # name -> one line for --help and README
    families: dict[str, str] = field(default_factory=dict)  # "torchvision" -> "module:attr" resolving "torchvision:X"

    def register(self, name: str, target: str | object, help: str = "") -> None:
        """Add a built-in (or a user's entry under a short name). `target` is "module:attr" or the object itself."""
        self.entries[name] = target
        self.helps[name] = help

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def choices(self) -> str:
        """The names for messages and --help, with the plug-in form last."""
        return ", ".join([*self.entries, *(f"{family}:NAME" for family in self.families), "or a plug-in module:attr"])

    def described(self) -> str:
        """The names with their one-line descriptions, for --help."""
        named = [f"{name} ({self.helps[name]})" if self.helps.get(name) else name for name in self.entries]
        return "; ".join([*named, *(f"{family}:NAME" for family in self.families), "or a plug-in module:attr"])

    def is_plugin(self, name: str) -> bool:
        return name not in self.entries and ":" in name and name.split(":", 1)[0] not in self.families

    def get(self, name: str):
        """The registered object (imported on first use), a family member, or a plug-in."""
        if name in self.entries:
            target = self.entries[name]
            return _import(target, self) if isinstance(target, str) else target
        family, sep, member = name.partition(":")
        if sep and family in self.families:
            return _import(self.families[family], self)(member)
        if not sep or not family or not member:
            raise ConfigError(f"{self.kind}={name!r} is not allowed: choose one of {self.choices()}")
        found = _import(name, self)
        if not self.accepts(found):
            raise PluginError(f"{self.flag} {name}: it is {_what(found)}, but {self.flag} expects {self.expected}")
        return found

    def provenance(self, name: str) -> dict | None:
        """For a plug-in or a user's registered entry: its name, module file and the file's sha256. None for a
        built-in (persist's own code: the manifest's persist version names it)."""
        target = self.entries.get(name)
        if isinstance(target, str) and target.startswith("persist."):
            return None
        if target is None and not self.is_plugin(name):
            return None  # a family member (torchvision:NAME): the torchvision version names it
        # a plug-in's module, or for a registered object the module that defined it
        module = importlib.import_module(name.split(":", 1)[0]) if target is None else inspect.getmodule(self.get(name))
        if module is None or getattr(module, "__file__", None) is None:
            return {"name": name, "module": None, "module_file": None, "sha256": None}  # defined in a notebook, say
        path = inspect.getsourcefile(module) or module.__file__
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
        return {"name": name, "module": module.__name__, "module_file": str(path), "sha256": digest}


def _import(target: str, registry: Registry):
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # a plug-in's own import error, whatever it is, becomes one line
        raise PluginError(
            f"{registry.flag} {target}: cannot import {module_name!r} ({type(error).__name__}: {error}); "
            f"expected package.module:attr naming {registry.expected}"
        ) from error
    found = module
    for part in attr.split("."):
        if not hasattr(found, part):
            raise PluginError(f"{registry.flag} {target}: {module_name} has no {attr!r}; expected {registry.expected}")
        found = getattr(found, part)
    return found


def _what(value: object) -> str:
    if inspect.isclass(value):
        return f"the class {value.__name__}"
    return f"a {type(value).__name__}"
