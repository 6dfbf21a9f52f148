"""The JSON Lines event log: whole lines only, faults counted, rotated by size or day.

Each record is one ``write`` system call on a file opened for appending, so a
crash leaves whole lines. A write that fails (a full disk) is cut back to the
last whole line and counted as lost; the next record tries again, so logging
resumes by itself when there is room. Rotated files are renamed aside with the
time they were started, which ``tail -F`` and log shippers follow.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_mfg.core.clock import file_utc
from coral_mfg.core.errors import UserError
from coral_mfg.core.events import Event, event_json
from coral_mfg.core.results import FrameResult
from coral_mfg.outputs.base import SinkBase
from coral_mfg.outputs.health import OutputHealth, os_reason
from coral_mfg.outputs.retention import oldest_first

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Rotation:
    """When the event log starts a new file, and how many old ones are kept."""

    max_bytes: int = 0  # 0: never by size
    daily: bool = False
    keep: int = 14

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 or self.daily


class EventLog(SinkBase):
    """One JSON object a line; see the module's docstring for what survives what."""

    def __init__(self, path: Path, started: float, rotation: Rotation = Rotation()) -> None:
        self.path = path
        self.started = started
        self.rotation = rotation
        self.health = OutputHealth("event log")
        self.rotated = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._closed = False
        self._size = 0
        self._opened = time.time()  # when this file was started (wall clock)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if rotation.enabled and path.exists() and path.stat().st_size > 0:
                self._rotate_aside(path.stat().st_mtime)
            self._open(truncate=True)
        except OSError as exc:
            raise UserError(f"cannot write event log {path} ({exc.strerror}); pass another "
                            "path to --events") from None

    def _open(self, truncate: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        self._fd = os.open(self.path, flags, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._opened = time.time()  # when this file was started (wall clock)

    def event(self, event: Event) -> None:
        self.record(event_json(event))

    def record(self, record: dict[str, Any]) -> None:
        """One JSON line: an event's, a frame's, or the summary."""
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._closed or not self.health.may_write(self.path.parent):
                return
            try:
                self._maybe_rotate(len(data))
                if self._fd is None:
                    self._open(truncate=False)
            except OSError as exc:
                self.health.failed(os_reason(exc))
                return
            self._append(data)

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(28, os.strerror(28))  # the rest did not fit: a full disk
        except OSError as exc:
            self._cut_back()
            self.health.failed(os_reason(exc))
            return
        self._size += written
        self.health.wrote()

    def _cut_back(self) -> None:
        """Remove a partial line, so the file stays whole lines."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            log.debug("cannot cut %s back to %d bytes", self.path, self._size, exc_info=True)

    def write(self, result: FrameResult) -> None:
        self.record(result.record(self.started))
        for event in result.events:
            self.event(event)

    # --- rotation ------------------------------------------------------------------------

    def _maybe_rotate(self, incoming: int) -> None:
        r = self.rotation
        full = r.max_bytes > 0 and self._size > 0 and self._size + incoming > r.max_bytes
        new_day = r.daily and dt.date.today() != dt.date.fromtimestamp(self._opened)
        if not (full or new_day):
            return
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        try:
            self._rotate_aside(self._opened)
        except OSError as exc:
            log.warning("event log %s not rotated: %s", self.path, os_reason(exc))
        self._open(truncate=False)  # a new file, or the old one if it could not move

    def _rotate_aside(self, started: float) -> None:
        stamp = file_utc(started)
        target = self.path.with_name(f"{self.path.stem}.{stamp}"
                                     f"{self.path.suffix}")
        n = 1
        while target.exists():
            n += 1
            target = target.with_name(f"{self.path.stem}.{stamp}-{n}"
                                      f"{self.path.suffix}")
        os.replace(self.path, target)
        self.rotated += 1
        log.info("event log rotated to %s", target)
        for old in self.rotated_files()[: -self.rotation.keep]:
            old.unlink(missing_ok=True)
            log.info("event log %s removed (keeping %d)", old, self.rotation.keep)

    def rotated_files(self) -> list[Path]:
        """The rotated files, oldest first."""
        return oldest_first(self.path.parent.glob(f"{self.path.stem}.*{self.path.suffix}"))

    def counts(self) -> dict[str, Any]:
        return {**self.health.counts(), "rotated": self.rotated}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
