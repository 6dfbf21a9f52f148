"""Where the run's newest status is kept for the views: see :mod:`coral_mfg.core.status`."""

from __future__ import annotations

import threading
from collections.abc import Callable

from coral_mfg.core.status import RunStatus


class StatusBoard:
    """Where the run puts its newest status and every view reads it: a reference swapped
    whole, so a reader never sees half of one."""

    def __init__(self, first: RunStatus) -> None:
        self._current = first
        self._lock = threading.Lock()
        self._listeners: list[Callable[[RunStatus], None]] = []

    @property
    def current(self) -> RunStatus:
        return self._current

    def publish(self, status: RunStatus) -> None:
        with self._lock:
            self._current = status
            listeners = list(self._listeners)
        for listener in listeners:
            listener(status)

    def listen(self, listener: Callable[[RunStatus], None]) -> None:
        with self._lock:
            self._listeners.append(listener)


