"""Live reload: the zone file is watched, and an edit takes effect within a second.

An invalid edit never stops the app: the last good zones stay in force and the
error is logged, written to the event log and shown on screen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coral_mfg.errors import UserError
from coral_mfg.safety import ZoneStore
from coral_mfg.zones import ZoneSource, reload_zones

log = logging.getLogger(__name__)

POLL_S = 0.25


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class ZoneWatcher(threading.Thread):
    def __init__(
        self,
        settings: dict[str, Any],
        store: ZoneStore,
        source: ZoneSource,
        stop: threading.Event,
        on_event: Callable[[dict[str, Any]], None],
    ) -> None:
        super().__init__(name="zone-watch", daemon=True)
        self.settings = settings
        self.store = store
        self.source = source
        self.stop_event = stop
        self.on_event = on_event
        self._seen = _stamp(source.path)

    def mark_saved(self) -> None:
        """The app itself just wrote the file: do not reload what it already has."""
        self._seen = _stamp(self.source.path)

    def run(self) -> None:
        while not self.stop_event.wait(POLL_S):
            stamp = _stamp(self.source.path)
            if stamp == self._seen:
                continue
            self._seen = stamp
            self.check_now()

    def check_now(self) -> None:
        try:
            zones = reload_zones(self.settings, self.source)
        except UserError as exc:
            message = str(exc)
            if message != self.store.error:
                log.warning("zones not reloaded, the last good ones stay: %s", message)
                self.on_event({"type": "zones_error", "error": message})
            self.store.fail(message)
            return
        except Exception:  # a bug in reloading must not take the app down either
            log.exception("zone reload failed")
            self.store.fail("zone reload failed (see the log)")
            return
        self.store.replace(zones)
        log.info("zones reloaded from %s: %s", self.source.path, ", ".join(z.name for z in zones))
        self.on_event({"type": "zones_reloaded", "zones": [z.name for z in zones]})
