"""One writer per run folder: an advisory lock (fcntl.flock) on OUT/.persist.lock, held for the whole run.

The lock file holds the holder's PID. The kernel drops a flock when its process dies, however it dies, so a lock that
can be taken is never in use; a PID still in the file then belongs to a run that was killed before it could clear it
(a stale lock). It is taken over, and `stale_pid` says whose it was, for the manifest. A second writer meets a held
lock and gets one line naming the holder's PID. The file is emptied, never deleted, on release: deleting a flocked file
lets a third process lock a new file of the same name while a second still holds the old one.

Advisory: it keeps out other persist processes (persist train, persist sweep, the bench), on one machine or on a
shared disk whose flock is honoured (local disks, NFSv4); nothing stops other programs from writing.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from persist.runs.records import RunDirError

LOCK = ".persist.lock"


class RunLock:
    """`with RunLock(folder) as lock:` holds the folder's lock; `lock.stale_pid` is the PID of a dead holder taken
    over, or None."""

    def __init__(self, folder: Path, what: str = "run"):
        self.path, self.what = Path(folder) / LOCK, what
        self.stale_pid: int | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # a folder we may not write to: one line, like every user error
            raise RunDirError(
                f"{self.path.parent} cannot be written ({error.strerror or error}): choose another --out"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"{self.path.parent} is in use by another persist {self.what} (PID {holder}): wait for it to finish, "
                "or choose another --out"
            ) from None
        previous = os.pread(fd, 32, 0).decode(errors="replace").strip()
        self.stale_pid = int(previous) if previous.isdigit() and int(previous) != os.getpid() else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a clean exit leaves no PID behind: only a killed run leaves a stale one
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def describe(self) -> dict:
        return {"pid": os.getpid(), "took_over_stale_lock_of_pid": self.stale_pid}

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
