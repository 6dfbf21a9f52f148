"""Changing a camera's zones, lines and presence regions while it runs.

The web view and the window's editor both come here: the new shapes are
checked as the run would check them at start-up (names, points, the detector's
labels), written back to the file they came from (the config's camera table,
its ``[[safety.zones]]``, or the original demo's CSV) without losing its
comments, put in force at once, and told as one ``zones_changed`` event naming
who changed what. Nothing is put in force unless it was saved, and nothing is
saved that the run would refuse.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coral_mfg.analytics.camera import CameraProcessor
from coral_mfg.analytics.lines import CountingLine
from coral_mfg.analytics.presence import PresenceCheck
from coral_mfg.analytics.safety import ZoneStore
from coral_mfg.analytics.zones import KeepoutZone, place_zone
from coral_mfg.config.settings import read_config_file
from coral_mfg.config.zone_file import KINDS, Shapes, Spec, plain, write_shapes
from coral_mfg.config.zones import (
    LEGACY_DEBOUNCE_FRAMES,
    LineSpec,
    PresenceSpec,
    ZoneSource,
    ZoneSpec,
    read_points_csv,
)
from coral_mfg.core.errors import ConfigError, UserError
from coral_mfg.core.events import EventSink, Stamper, ZonesChanged
from coral_mfg.core.geometry import Rect
from coral_mfg.runtime.zone_watch import ZoneWatcher

log = logging.getLogger(__name__)

SINGULAR = {"zones": "zone", "lines": "line", "presence": "presence region"}


class EditNotAllowedError(UserError):
    """A change that cannot be made to this camera as it is set up (not a bad value)."""


@dataclass
class EditableCamera:
    """One camera's shapes: where they are saved, where they land, what holds them."""

    name: str
    source: ZoneSource | None  # None: the camera's shapes have no file to go to
    picture: Rect  # the camera's picture in its output pane
    whole_box: bool
    processor: CameraProcessor
    place_line: Callable[[LineSpec], CountingLine]
    place_check: Callable[[PresenceSpec], PresenceCheck]
    lines: tuple[LineSpec, ...] = ()  # as written, the disabled ones too
    presence: tuple[PresenceSpec, ...] = ()

    @property
    def store(self) -> ZoneStore | None:
        safety = self.processor.safety
        return safety.store if safety is not None else None

    @property
    def kinds(self) -> tuple[str, ...]:
        """What may be changed on this camera."""
        if self.source is None:
            return ()
        if self.source.kind == "csv" or self.source.camera is None:
            return ("zones",) if self.store is not None else ()
        return ("zones", "lines", "presence") if self.store is not None else (
            "lines", "presence")


@dataclass
class ShapeEditor:
    """Every camera's shapes, changed one camera at a time (see the module's docstring)."""

    cameras: dict[str, EditableCamera]
    watcher: ZoneWatcher | None
    on_event: EventSink
    stamper: Stamper
    out_size: tuple[int, int]
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def camera(self, name: str) -> EditableCamera:
        found = self.cameras.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def shapes(self, name: str) -> Shapes:
        """A camera's shapes in force, as they would be written."""
        cam = self.camera(name)
        store = cam.store
        zones = tuple(z.as_spec(cam.picture) for z in store.zones) if store else ()
        return Shapes(zones=zones, lines=cam.lines, presence=cam.presence)

    def describe(self, name: str) -> dict[str, Any]:
        """A camera's shapes as JSON, with what the editor needs to draw them."""
        cam = self.camera(name)
        shapes = self.shapes(name)
        x, y, w, h = cam.picture
        return {
            "camera": name,
            "pane": list(self.out_size),
            "picture": [x, y, w, h],
            "editable": list(cam.kinds),
            "saved_to": ("csv" if cam.source is not None and cam.source.kind == "csv"
                         else "config" if cam.source is not None else None),
            **{kind: [_json(s) for s in shapes.of(kind)] for kind in KINDS},
        }

    def replace(self, name: str, shapes: Shapes, kinds: Sequence[str], by: str,
                before: tuple[ZoneSpec, ...] | None = None) -> tuple[str, ...]:
        """Save the ``kinds`` of ``shapes`` for camera ``name`` and put them in force;
        what changed (nothing: nothing is written). ``before``: the zones as they were
        saved, when those in force were already changed live (the window's editor)."""
        cam = self.camera(name)
        refused = [k for k in kinds if k not in cam.kinds]
        if refused:
            raise EditNotAllowedError(_why_not(cam, refused[0]))
        with self._lock:
            was = self.shapes(name)
            if before is not None:
                was = Shapes(zones=before, lines=was.lines, presence=was.presence)
            changes = tuple(c for kind in kinds
                            for c in _changes(kind, was.of(kind), shapes.of(kind)))
            if not changes and cam.store is not None and cam.store.error is not None:
                # the file holds what was refused, not what is in force: write it over
                changes = ("saved the zones in force over the refused file",)
            if not changes:
                return ()
            placed = self._place(cam, shapes, kinds)
            assert cam.source is not None
            self._save(cam.source, shapes, kinds)
            self._apply(cam, shapes, kinds, placed)
        store = cam.store
        zones = tuple(z.name for z in store.zones) if store is not None else ()
        log.info("%s of %s changed by %s: %s", "/".join(kinds), name, by, "; ".join(changes))
        self.on_event(ZonesChanged(stream=name, by=by, changes=changes, zones=zones,
                                   file=cam.source.path.name, time=self.stamper.run_time(),
                                   stamp=self.stamper.stamp()))
        return changes

    # --- the steps -------------------------------------------------------------------------

    def _place(self, cam: EditableCamera, shapes: Shapes, kinds: Sequence[str]
               ) -> dict[str, tuple[Any, ...]]:
        """Every shape on the output frame: the geometry and the labels checked."""
        placed: dict[str, tuple[Any, ...]] = {}
        source = cam.source
        assert source is not None
        if "zones" in kinds:
            if not shapes.zones:
                raise ConfigError("a safety camera needs at least one zone: disable a zone "
                                  "rather than delete the last one")
            if source.kind == "csv":
                _check_csv(source, shapes.zones)
            placed["zones"] = tuple(
                place_zone(z, cam.picture, cam.whole_box, source, f"zone '{z.name}'")
                for z in shapes.zones)
        if "lines" in kinds:
            placed["lines"] = tuple(cam.place_line(s) for s in shapes.lines if s.enabled)
        if "presence" in kinds:
            placed["presence"] = tuple(cam.place_check(s) for s in shapes.presence if s.enabled)
        return placed

    def _save(self, source: ZoneSource, shapes: Shapes, kinds: Sequence[str]) -> None:
        """Written where they came from, the watcher told so that it does not read the
        file again as if someone else had changed it."""
        check = read_points_csv if source.kind == "csv" else read_config_file
        if self.watcher is not None and self.watcher.path == source.path:
            with self.watcher.writing():
                write_shapes(source, shapes, kinds, check)
        else:
            write_shapes(source, shapes, kinds, check)

    def _apply(self, cam: EditableCamera, shapes: Shapes, kinds: Sequence[str],
               placed: dict[str, tuple[Any, ...]]) -> None:
        processor = cam.processor
        if "zones" in kinds and cam.store is not None:
            zones: tuple[KeepoutZone, ...] = placed["zones"]
            cam.store.replace(zones)
        with processor.lock:
            if "lines" in kinds:
                lines: tuple[CountingLine, ...] = placed["lines"]
                old = {line.name: line for line in processor.lines}
                for line in lines:  # a line kept keeps its counts
                    if line.name in old:
                        line.counts = old[line.name].counts
                processor.lines = lines
                cam.lines = shapes.lines
            if "presence" in kinds:
                checks: tuple[PresenceCheck, ...] = placed["presence"]
                was = {c.name: c for c in processor.presence}
                for check in checks:  # a check kept keeps its state: no second alarm
                    if check.name in was and check.spec.label == was[check.name].spec.label:
                        check.seen, check.missing = was[check.name].seen, was[check.name].missing
                processor.presence = checks
                cam.presence = shapes.presence


def _check_csv(source: ZoneSource, zones: tuple[ZoneSpec, ...]) -> None:
    """The CSV holds one zone's points: its name is the file's, the rest fixed."""
    name = source.path.stem
    zone = zones[0]
    if len(zones) != 1 or zone.name != name:
        raise EditNotAllowedError(f"the zone comes from {source.path.name}, which holds one zone's "
                          f"points only (named '{name}' after the file): define zones in a "
                          "config file to add or rename them")
    fixed = ZoneSpec(name=name, points=zone.points, units=zone.units,
                     frame_size=zone.frame_size, enter_frames=LEGACY_DEBOUNCE_FRAMES,
                     exit_frames=LEGACY_DEBOUNCE_FRAMES)
    if zone != fixed:
        raise EditNotAllowedError(f"the zone comes from {source.path.name}, which holds its points "
                          "only: define zones in a config file to change anything else")


def _why_not(cam: EditableCamera, kind: str) -> str:
    if cam.source is None:
        return f"camera {cam.name} has nothing to edit"
    if kind == "zones":
        return (f"camera {cam.name} has no safety role: its zones would check nobody; give "
                'it roles = ["safety"] in the config file first')
    return (f"{kind} belong to a [cameras.{cam.name}] table in the config file; this "
            "camera has none")


def _json(spec: Spec) -> dict[str, Any]:
    return {k: plain(v) for k, v in spec.model_dump().items() if v is not None}


def _changes(kind: str, old: tuple[Spec, ...], new: tuple[Spec, ...]) -> list[str]:
    """What changed, one phrase per shape: added, deleted, renamed, moved, enabled,
    disabled, or changed (other keys)."""
    what = SINGULAR[kind]
    out: list[str] = []
    old_names = [s.name for s in old]
    new_names = [s.name for s in new]
    gone = [s for s in old if s.name not in new_names]
    for i, spec in enumerate(new):
        if spec.name in old_names:
            before = old[old_names.index(spec.name)]
            label = f"{what} '{spec.name}'"
        else:
            match = next((g for g in gone if old.index(g) == i), None)
            if match is None:
                out.append(f"added {what} '{spec.name}'")
                continue
            gone.remove(match)
            before = match
            out.append(f"renamed {what} '{match.name}' to '{spec.name}'")
            label = f"{what} '{spec.name}'"
        out += _differences(label, before, spec)
    out += [f"deleted {what} '{g.name}'" for g in gone]
    if not out and old_names != new_names:
        out.append(f"reordered the {kind}")
    return out


def _differences(label: str, old: Spec, new: Spec) -> list[str]:
    out = []
    if old.points != new.points or old.units != new.units:
        out.append(f"moved {label}")
    if old.enabled != new.enabled:
        out.append(f"{'enabled' if new.enabled else 'disabled'} {label}")
    skip = {"name", "points", "units", "enabled"}
    keys = [k for k in type(new).model_fields if k not in skip
            and getattr(old, k) != getattr(new, k)]
    if keys:
        out.append(f"changed {', '.join(keys)} of {label}")
    return out
