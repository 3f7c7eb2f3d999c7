"""The errors a user can fix. The CLI prints any PersistError as one line on stderr and exits with code 2."""

from __future__ import annotations


class PersistError(Exception):
    """A problem the user can fix: the CLI prints the message as one line and exits with code 2."""


class ConfigError(PersistError, ValueError):
    """A configuration value is out of range."""


class PluginError(ConfigError):
    """A plug-in (`package.module:attr`) cannot be imported, or is not the kind of thing its flag expects."""


class PipelineError(PersistError):
    """The input pipeline failed mid-epoch (a dead worker, say); finished epochs are already on disk."""


class DivergedError(PersistError):
    """The training loss became NaN or infinite."""
