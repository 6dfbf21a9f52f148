"""One process per Edge TPU: a lock file per device, held by the process that drives it.

libedgetpu opens a device exclusively and, for USB, resets its port on the
way in: a second process that tries to open a Coral in use breaks the first.
So the Edge TPU process takes an ``flock`` on the device's lock file before it
loads libedgetpu, and holds it for its life (the kernel drops it when the
process ends, however it ends). Anyone else, ``coral-mfg doctor`` or a second
station, reads the holder from the file and never touches the device.

Lock files live in ``/run/lock`` (shared by all users; ``/tmp`` where that is
not writable), or in ``$CORAL_MFG_LOCK_DIR``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_DIR_ENV = "CORAL_MFG_LOCK_DIR"
PROGRAM = "coral-mfg"
#: The lock of an Edge TPU that discovery could not place (any device): one for all.
ANY_DEVICE = "edgetpu"
CLAIM_TRIES = 5
CLAIM_PAUSE_S = 0.1

_held: dict[str, int] = {}  # key -> fd, for this process's life


def lock_dir() -> Path:
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured)
    run = Path("/run/lock")
    if run.is_dir() and os.access(run, os.W_OK | os.X_OK):
        return run
    return Path(tempfile.gettempdir())


def lock_path(key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
    return lock_dir() / f"coral-mfg-{safe}.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a device: the application's pid and program, as it wrote them."""

    pid: int | None
    program: str

    def describe(self) -> str:
        return f"{self.program} (pid {self.pid})" if self.pid else f"another {self.program}"


def _read_holder(fd: int) -> Holder:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        data = {}
    pid = data.get("pid") if isinstance(data, dict) else None
    program = data.get("program") if isinstance(data, dict) else None
    return Holder(pid if isinstance(pid, int) else None,
                  program if isinstance(program, str) else PROGRAM)


class InUseError(Exception):
    """The device's lock is held by another process."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(holder.describe())
        self.holder = holder


def claim(key: str, owner_pid: int, device: str) -> None:
    """Hold ``key``'s lock for this process's life, or raise :class:`InUseError`.

    ``owner_pid`` is the process a person would stop (the application, not its
    process). OSError when the lock file cannot be made at all.
    """
    if key in _held:
        return
    path = lock_path(key)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except PermissionError:  # another user's file: locking works on a read-only handle
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    for attempt in range(CLAIM_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
            if attempt == CLAIM_TRIES - 1:
                found = _read_holder(fd)
                os.close(fd)
                raise InUseError(found) from None
            time.sleep(CLAIM_PAUSE_S)  # a reader's brief shared lock, most likely
    with contextlib.suppress(OSError):  # any user may take it over once it is free
        os.fchmod(fd, 0o666)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        record = {"pid": owner_pid, "worker_pid": os.getpid(), "program": PROGRAM,
                  "device": device}
        os.pwrite(fd, json.dumps(record).encode(), 0)
    _held[key] = fd


def holder(key: str) -> Holder | None:
    """Who holds ``key``'s lock now, or None; never blocks, never takes it for long."""
    try:
        fd = os.open(lock_path(key), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _read_holder(fd)
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
