"""Whether an output is writing, and what it could not write.

An output fault (a full disk, a device error) must never stop inspection nor
pass unnoticed: the thread that writes records the fault here, and the run
reports it (log line, HUD, event log, summary) from its own threads, so a
failing writer never waits on the outputs that report it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral_mfg.core.clock import iso_utc
from coral_mfg.core.events import OutputFault, OutputRestored, Stamper
from coral_mfg.outputs.retention import free_bytes

log = logging.getLogger(__name__)

RETRY_S = 5.0  # while failing, the next attempt to write
#: Room a failed output waits for before it tries again: a disk on its last
#: block would otherwise take short records and refuse long ones, flapping.
RESUME_FREE_BYTES = 1 << 20


@dataclass(frozen=True)
class Transition:
    """An output failed or came back; becomes an ``output_fault`` / ``output_restored`` event."""

    output: str
    failed: bool
    reason: str
    lost: int  # items lost so far (for a recovery: while it was failing)
    wall: float = field(default_factory=time.time)  # when; it may be logged later

    def event(self, stamper: Stamper) -> OutputFault | OutputRestored:
        """The event telling of it, stamped now (``at`` says when it happened)."""
        at, time_ = iso_utc(self.wall), stamper.run_time()
        if self.failed:
            return OutputFault(output=self.output, reason=self.reason, at=at, time=time_,
                               stamp=stamper.stamp())
        return OutputRestored(output=self.output, lost=self.lost, at=at, time=time_,
                              stamp=stamper.stamp())


class OutputHealth:
    """One output's state: its current fault, if any, and counts of what it lost.

    Only transitions are logged (one line when it fails, one when it is back), so
    a disk that stays full costs one log line, not one a frame.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.error: str | None = None
        self.written = 0
        self.lost = 0
        self.dropped = 0
        self._lost_in_fault = 0
        self._pending: list[Transition] = []
        self.since = 0.0
        self._next_try = 0.0

    def wrote(self, count: int = 1) -> None:
        """``count`` items reached the disk; ends a fault."""
        with self._lock:
            self.written += count
            if self.error is None:
                return
            lost, self.error = self._lost_in_fault, None
            self._pending.append(Transition(self.name, False, "", lost))
        log.warning("%s: writing again after %.0f s; %d item(s) lost meanwhile",
                    self.name, time.monotonic() - self.since, lost)

    def failed(self, reason: str, lost: int = 1) -> None:
        """``lost`` items could not be written because of ``reason``."""
        with self._lock:
            self.lost += lost
            self._lost_in_fault += lost
            if self.error is not None:
                return
            self.error, self.since, self._lost_in_fault = reason, time.monotonic(), lost
            self._next_try = self.since + RETRY_S
            self._pending.append(Transition(self.name, True, reason, lost))
        log.error("%s: cannot write (%s); inspection goes on, and writing resumes by itself "
                  "when it can", self.name, reason)

    def lost_at_end(self, count: int) -> None:
        """``count`` items were still waiting for the output when the run ended: lost."""
        with self._lock:
            self.lost += count
            self._lost_in_fault += count

    def may_write(self, folder: Path) -> bool:
        """Whether to try writing the next item; when not, that item is counted lost.

        Healthy: always. Failing: once every :data:`RETRY_S`, and only when
        ``folder``'s disk has :data:`RESUME_FREE_BYTES` free.
        """
        with self._lock:
            if self.error is None:
                return True
            now = time.monotonic()
            retry = now >= self._next_try
            if retry:
                self._next_try = now + RETRY_S
        if retry:
            with contextlib.suppress(OSError):  # unknown free space: try
                retry = free_bytes(folder) >= RESUME_FREE_BYTES
        if not retry:
            with self._lock:
                self.lost += 1
                self._lost_in_fault += 1
        return retry

    def drop(self, count: int = 1) -> None:
        """Items deliberately not written (a full queue): counted, not a fault."""
        with self._lock:
            self.dropped += count

    def transitions(self) -> list[Transition]:
        """What changed since the last call, oldest first."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def counts(self) -> dict[str, Any]:
        with self._lock:
            return {"written": self.written, "dropped": self.dropped, "lost": self.lost,
                    "error": self.error}


def os_reason(exc: BaseException) -> str:
    """An OS or library error as a few words a person can act on."""
    strerror = getattr(exc, "strerror", None)
    filename = getattr(exc, "filename", None)
    text = strerror or str(exc) or type(exc).__name__
    return f"{text} ({filename})" if filename else text
