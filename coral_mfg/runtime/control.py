"""What a view may do with a run: read its status, pause it, edit its zones, and let it
report. The window takes this, never the run's own class."""

from __future__ import annotations

import threading
from typing import Protocol

from coral_mfg.runtime.shape_edit import ShapeEditor
from coral_mfg.runtime.status import StatusBoard
from coral_mfg.runtime.zone_watch import ZoneWatcher


class RunControl(Protocol):
    """A running pipeline, as its views see it."""

    board: StatusBoard
    zone_watcher: ZoneWatcher | None  # None: no camera has the safety role
    shape_editor: ShapeEditor | None  # changes zones, lines and presence regions, saved

    @property
    def paused(self) -> threading.Event: ...

    def set_paused(self, paused: bool) -> None: ...

    def poll(self, timeout: float) -> bool: ...
