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


class DataError(PersistError):
    """A dataset is missing or unreadable."""


class FolderError(PersistError):
    """The image folder is missing, empty, laid out otherwise, or holds a file that cannot be decoded."""


class StorageError(ConfigError):
    """A storage folder holds something else, or is damaged."""


class DecodeError(StorageError):
    """A stored file cannot be decoded into an image of the dataset's shape."""


class RunDirError(PersistError):
    """The output folder cannot take this run."""
