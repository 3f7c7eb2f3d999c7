"""Adaptive persistency (`--persistency auto:CAP`): step again on the batch in hand only while the next one is late.

A fixed K trades fresh data for steps even when the loader keeps up, and still lets the device idle when it stalls.
Here a background thread (`Prefetcher`) fills a small queue with the pipeline's next batches, whatever the pipeline's
own prefetching. After each step on the current batch the trainer asks, without waiting, whether the next batch is
there (`next_ready`): if it is, it takes it; if not, and the cap allows, it steps again on the current batch, with
the lr schedule's rate for that use. So the device never waits for data while a batch is in hand, and no fresh
batch is delayed by more than the step already under way.

On CUDA the host runs ahead of the device, so "the next batch is not ready" is asked when it matters: when the
device has finished the queued step (a CUDA event queried, never waited on). Until then the host polls both; losses
stay on the device and nothing here synchronizes with it. That poll is host time waiting for the device, not for
data: the trainer counts it as device_wait_s.

On CUDA the prefetch thread binds the run's device and loads on a stream of its own: the load's gather and copies
overlap the training stream's steps instead of queueing inside them, the training stream waits on an event recorded
after the load, and every tensor of the batch is marked as used on the training stream (the caching allocator then
keeps its memory until the training stream is done with it).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

_END = object()  # the pipeline's epoch is over


def cuda_tensors(batch: Any) -> Iterator[torch.Tensor]:
    """The CUDA tensors in a batch (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(batch, torch.Tensor):
        if batch.is_cuda:
            yield batch
    elif isinstance(batch, (tuple, list)):
        for item in batch:
            yield from cuda_tensors(item)
    elif isinstance(batch, dict):
        for item in batch.values():
            yield from cuda_tensors(item)


class LoadStream:
    """Where the prefetch thread loads on `device`: on CUDA a stream apart from training, and an event after each
    load that the training stream waits on; on a CPU, nothing to order."""

    def __init__(self, device: torch.device | None):
        if device is not None and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # the training thread's, not the new thread's 0
        self.device = device if device is not None and device.type == "cuda" else None
        self.stream = None

    def bind(self) -> None:
        """In the prefetch thread, before anything: its CUDA calls go to the run's device (a pinned buffer or a
        context made on GPU 0 otherwise), and its own stream."""
        if self.device is not None:
            torch.cuda.set_device(self.device)
            self.stream = torch.cuda.Stream(self.device)

    def load(self, take: Callable[[], Any]) -> tuple[Any, Any]:
        """(`take()` run on the loading stream, the event after its work), in the prefetch thread."""
        if self.stream is None:
            return take(), None
        with torch.cuda.stream(self.stream):
            batch = take()
        done = torch.cuda.Event()
        done.record(self.stream)
        return batch, done

    def hand_over(self, batch: Any, done) -> Any:
        """In the training thread, before the batch's first use: the training stream waits for the load, and each
        tensor is marked as used there."""
        if done is not None:
            training = torch.cuda.current_stream(self.device)
            training.wait_event(done)
            for tensor in cuda_tensors(batch):
                tensor.record_stream(training)
        return batch


class Prefetcher:
    """Iterates `batches` in a background thread into a queue of `depth`; iterating the Prefetcher takes them back
    in order. `ready()` says, without waiting, whether the next item (a batch or the end) is there. An error in the
    thread is raised in the caller, at the item where it happened. With a CUDA `device`, loads run on their own
    stream (LoadStream)."""

    def __init__(self, batches: Iterator, depth: int = 2, device: torch.device | None = None):
        self._loading = LoadStream(device)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._go = threading.Event()  # cleared while paused: no load starts
        self._go.set()
        self._thread = threading.Thread(target=self._fill, args=(batches,), name="persist-prefetch", daemon=True)
        self._thread.start()

    def _fill(self, batches: Iterator) -> None:
        # this thread's own torch ops (a preloaded gather, a normalize) run on one core: with the intra-op pool's
        # size it would start a second OpenMP team beside the training step's, and on a CPU the two teams' spinning
        # threads slowed every step by about 1.6x (the bench's auto-overhead check found it). OpenMP's thread count is
        # per thread, so the training thread keeps its own.
        torch.set_num_threads(1)
        try:
            self._loading.bind()
            while self._wait_go():
                batch, done = self._loading.load(lambda: next(batches, _END))
                if not self._put(batch if batch is _END else (batch, done)) or batch is _END:
                    return  # closed (the epoch ended early: a budget, an error), or the epoch is over
        except BaseException as error:  # handed to the consumer, which raises it where the batch was due
            self._put(error)

    def _wait_go(self) -> bool:
        """Wait while paused; False once closed."""
        while not self._go.wait(timeout=0.05):
            if self._stop.is_set():
                return False
        return not self._stop.is_set()

    @contextlib.contextmanager
    def paused(self):
        """No load starts inside this block (one already under way finishes). The trainer pauses around a mid-epoch
        evaluation: its clocks stop there, and loading on a stopped clock would hide load time that a fixed K's
        synchronous load pays in full (the auto study found 1.0 s of 8.4 s of planted delay hidden this way)."""
        self._go.clear()
        try:
            yield
        finally:
            self._go.set()

    def _put(self, item) -> bool:
        """Queue `item`, waiting for room but not past close(); False once closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def ready(self) -> bool:
        return not self._queue.empty()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # a later call ends too
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return self._loading.hand_over(*item)

    def close(self) -> None:
        """Stop the thread; it notices within one put's timeout, or after the load it is inside."""
        self._stop.set()
        self._thread.join()


class StepDone:
    """Whether the device has finished the last step recorded: a CUDA event queried without waiting; on a CPU the
    step ran synchronously, so it is always done."""

    def __init__(self, device: torch.device):
        self.device = device
        self.event = torch.cuda.Event() if device.type == "cuda" else None

    def record(self) -> None:
        if self.event is not None:
            self.event.record(torch.cuda.current_stream(self.device))  # the run's device, whichever is current

    def __call__(self) -> bool:
        return self.event is None or self.event.query()


def next_ready(
    ready: Callable[[], bool],
    step_done: Callable[[], bool],
    now: Callable[[], float] = time.perf_counter,
    pause: Callable[[], None] = lambda: time.sleep(0),
) -> tuple[bool, float]:
    """(whether the next batch is there, seconds the host waited to know): waits only while the device still works
    through the queued step and no batch has come; once the device is done, a missing batch means "step again"."""
    start = now()
    while not ready():
        if step_done():
            return False, now() - start
        pause()
    return True, now() - start


def train_while_late(
    one_use: Callable[[object], None],
    uses: list,
    ready: Callable[[], bool],
    step_done: Callable[[], bool],
    now: Callable[[], float] = time.perf_counter,
) -> tuple[int, float]:
    """Use 1 of the batch in hand, then each further use only while the next batch is late, up to the last of `uses`
    (the cap). Returns (uses taken, seconds the host waited for the device's queued step to learn whether the next
    batch had come: device wait, not data wait)."""
    waited_s = 0.0
    for taken, use in enumerate(uses, start=1):
        one_use(use)
        if taken == len(uses):
            break  # the cap
        came, waited = next_ready(ready, step_done, now)
        waited_s += waited
        if came:
            break
    return taken, waited_s


def uses_histogram(uses_per_load: list[int]) -> dict[str, int]:
    """{"k": loads that got k uses}, with string keys for JSON."""
    counts: dict[str, int] = {}
    for k in uses_per_load:
        counts[str(k)] = counts.get(str(k), 0) + 1
    return dict(sorted(counts.items(), key=lambda item: int(item[0])))
