"""Zone files: loading them, and live reload, so an edit takes effect within seconds.

A file is read only once it is whole: after it has stayed unchanged for
:data:`SETTLE_S` (an editor or a script may write it in pieces, with pauses),
or at once when a new file was renamed over it (an atomic save). An invalid
edit never stops the app: the last good zones stay in force and the error is
logged, written to the event log and shown on screen.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from coral_mfg.analytics.safety import ZoneStore
from coral_mfg.analytics.zones import KeepoutZone, place_zones
from coral_mfg.config.cameras import CameraConfig
from coral_mfg.config.settings import Settings, read_config_file
from coral_mfg.config.zones import ZoneSource, ZoneSpec, csv_spec
from coral_mfg.core.errors import ConfigError, UserError
from coral_mfg.core.events import EventSink, Stamper, ZonesError, ZonesReloaded
from coral_mfg.core.geometry import Rect

log = logging.getLogger(__name__)

#: How often the zone file is looked at.
LOOK_EVERY_S = 0.25
#: A changed file is read once it has been unchanged this long.
SETTLE_S = 1.0


@dataclass(frozen=True)
class ZonePlacement:
    """Where a camera's zones land: its picture in the output frame, and the default mode."""

    picture: Rect
    whole_box: bool


@dataclass(frozen=True)
class ZoneTarget:
    """One safety camera's zones: the file they come from, where they land, where they are
    kept in force."""

    camera: str
    source: ZoneSource
    placement: ZonePlacement
    store: ZoneStore


def zone_source(settings: Settings, camera: CameraConfig) -> ZoneSource:
    """The file a camera's zones come from: its ``[[cameras.NAME.zones]]``, the config's
    ``[[safety.zones]]`` (the original streams), or the original demo's CSV."""
    if settings.cameras:
        assert settings.config is not None, "cameras come from a config file"
        return ZoneSource(settings.config, "toml", camera.name)
    if settings.zones_from_csv or settings.config is None:
        return ZoneSource(settings.safety.keepout_points_path, "csv")
    return ZoneSource(settings.config, "toml")


def read_zone_specs(source: ZoneSource) -> tuple[ZoneSpec, ...]:
    if source.kind == "csv":
        return (csv_spec(source.path),)
    read = read_config_file(source.path)
    if source.camera is not None:
        camera = next((c for c in read.get("cameras", ()) if c.name == source.camera), None)
        if camera is None:
            raise ConfigError(f"{source.path}: camera '{source.camera}' is no longer in it")
        return tuple(camera.zones)
    specs: tuple[ZoneSpec, ...] = read.get("zones", ())
    if not specs:
        raise ConfigError(f"{source.path}: it no longer defines any [[safety.zones]]")
    return specs


def load_zones(
    source: ZoneSource, placement: ZonePlacement, specs: tuple[ZoneSpec, ...] | None = None
) -> tuple[KeepoutZone, ...]:
    """The zones of ``source`` on the output frame (read again unless ``specs`` are given)."""
    specs = read_zone_specs(source) if specs is None else specs
    return place_zones(specs, placement.picture, placement.whole_box, source)


def zones_of(
    settings: Settings, camera: CameraConfig, picture: Rect
) -> tuple[ZoneSource, ZonePlacement, tuple[KeepoutZone, ...]]:
    """A camera's start-up zones, placed where its ``picture`` lies in the output."""
    source = zone_source(settings, camera)
    placement = ZonePlacement(picture, settings.safety.safety_check_whole_box)
    specs = None if source.kind == "csv" else camera.zones
    return source, placement, load_zones(source, placement, specs)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime, size): a new inode is a file renamed over the old one, whole."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class ZoneWatcher(threading.Thread):
    """Polls the zone file (the cameras' zones all come from one) and swaps each camera's
    zones in force when it changes."""

    def __init__(
        self,
        targets: tuple[ZoneTarget, ...],
        stop: threading.Event,
        *,
        on_event: EventSink,
        stamper: Stamper,
    ) -> None:
        super().__init__(name="zone-watch", daemon=True)
        assert targets and len({t.source.path for t in targets}) == 1, "one file"
        self.targets = targets
        self.path = targets[0].source.path
        self.stop_event = stop
        self.on_event = on_event
        self.stamper = stamper
        self._seen = _stamp(self.path)
        self._pending = False  # a change seen and not yet read
        self._changing: tuple[int, int, int] | None = None  # the file as last seen meanwhile
        self._since = 0.0  # when it last changed
        self._lock = threading.Lock()  # the editor's save and the watcher's look

    def target(self, camera: str) -> ZoneTarget | None:
        return next((t for t in self.targets if t.camera == camera), None)

    def reload(self, camera: str) -> None:
        """Read one camera's zones from the file again now (an editor left unsaved)."""
        target = self.target(camera)
        if target is not None:
            with self._lock:
                self._reload(target, set())

    def mark_saved(self) -> None:
        """The app itself just wrote the file: do not reload what it already has."""
        with self._lock:
            self._seen = _stamp(self.path)
            self._pending = False

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """The app itself writes the file in this block: no look at it meanwhile, and no
        reload of what it wrote afterwards."""
        with self._lock:
            yield
            self._seen = _stamp(self.path)
            self._pending = False
            # the file was refused before: the other cameras it holds may be whole again
            logged: set[str] = set()
            for target in self.targets:
                if target.store.error is not None:
                    self._reload(target, logged)

    def run(self) -> None:
        while not self.stop_event.wait(LOOK_EVERY_S):
            self.poll(time.monotonic())

    def poll(self, now: float) -> None:
        """Look at the file once: read it if it changed and has settled (or was renamed
        over the old one); ``now`` is the monotonic time of the look."""
        with self._lock:
            self._poll(now)

    def _poll(self, now: float) -> None:
        stamp = _stamp(self.path)
        if not self._pending:
            if stamp == self._seen:
                return
            if stamp is not None and self._seen is not None and stamp[0] != self._seen[0]:
                self._seen = stamp  # a new file renamed over the old one: written whole
                self.check_now()
                return
            self._pending, self._changing, self._since = True, stamp, now
            return
        if stamp != self._changing:
            self._changing, self._since = stamp, now  # still being written
            return
        if now - self._since >= SETTLE_S:
            self._pending, self._seen = False, stamp
            self.check_now()

    def check_now(self) -> None:
        logged: set[str] = set()  # one file read for several cameras: one warning a fault
        for target in self.targets:
            self._reload(target, logged)

    def _reload(self, target: ZoneTarget, logged: set[str]) -> None:
        store, camera = target.store, target.source.camera
        try:
            zones = load_zones(target.source, target.placement)
        except UserError as exc:
            message = str(exc)
            if message != store.error:
                if message not in logged:
                    log.warning("zones not reloaded, the last good ones stay: %s", message)
                    logged.add(message)
                self.on_event(ZonesError(error=message, stream=camera,
                                         time=self.stamper.run_time(),
                                         stamp=self.stamper.stamp()))
            store.fail(message)
            return
        except Exception:  # a bug in reloading must not take the app down either
            log.exception("zone reload failed")
            store.fail("zone reload failed (see the log)")
            return
        store.replace(zones)
        log.info("zones of %s reloaded from %s: %s", target.camera, self.path,
                 ", ".join(z.name for z in zones))
        self.on_event(ZonesReloaded(zones=tuple(z.name for z in zones), stream=camera,
                                    time=self.stamper.run_time(), stamp=self.stamper.stamp()))
