"""--delay-ms: a fixed host delay added to every load of any pipeline."""

from __future__ import annotations

import time
from collections.abc import Iterator

from persist.data.base import Batch, Pipeline


class DelayedPipeline:
    """Adds a fixed host delay to every load, as slow storage would, so users can see when persistency pays."""

    def __init__(self, inner: Pipeline, delay_ms: float, sleep=time.sleep):
        self.inner, self.delay_s, self.sleep = inner, delay_ms / 1000, sleep
        self.name = inner.name

    def __len__(self) -> int:
        return len(self.inner)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        for batch in self.inner.epoch(epoch):
            self.sleep(self.delay_s)
            yield batch

    def describe(self) -> dict:
        return {**self.inner.describe(), "delay_ms": self.delay_s * 1000}

    def close(self) -> None:
        self.inner.close()
