"""One writer per run folder: an advisory lock (fcntl.flock) on OUT/.persist.lock, held for the whole run.

The lock file holds the holder's PID. The kernel drops a flock when its process dies, however it dies, so a lock that
can be taken is never in use; a lock file still there belongs to a run that was killed before it could remove it (a
stale lock). It is taken over, and `stale_pid` says whose it was, for the manifest. A second writer meets a held
lock and gets one line naming the holder's PID. A clean exit removes the file (so a sweep folder holds run folders
only); a process that locked the file just as it was removed finds the path gone or another inode there, and locks
again, so two writers never hold two files of one name.

Advisory: it keeps out other persist processes (persist train, persist sweep, the bench), on one machine or on a
shared disk whose flock is honoured (local disks, NFSv4); nothing stops other programs from writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from persist.errors import RunDirError

LOCK = ".persist.lock"


class RunLock:
    """`with RunLock(folder) as lock:` holds the folder's lock; `lock.stale_pid` is the PID of a dead holder taken
    over, or None."""

    def __init__(self, folder: Path, what: str = "run"):
        self.path, self.what = Path(folder) / LOCK, what
        self.stale_pid: int | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        while True:
            fd = self._open_locked()
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)  # its holder removed it as we locked it: lock the file now at that path
        previous = os.pread(fd, 32, 0).decode(errors="replace").strip()
        self.stale_pid = int(previous) if previous.isdigit() and int(previous) != os.getpid() else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def _open_locked(self) -> int:
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
        return fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still locked: only a killed run leaves the file (a stale lock)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def describe(self) -> dict:
        return {"pid": os.getpid(), "took_over_stale_lock_of_pid": self.stale_pid}

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
