"""persist: GPU training-throughput benchmarks for minibatch persistency."""

from persist.config import ConfigError, PersistError, RunConfig

__all__ = ["ConfigError", "PersistError", "RunConfig"]
