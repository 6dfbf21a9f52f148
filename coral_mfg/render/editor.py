"""The on-screen zone editor: drag, add and delete vertices, add and name zones, save.

Edits apply live (a zone that would cross itself is held back until it is
valid again) and Ctrl+S writes them back, through the same writer as the web
view, to the file they came from: the camera's ``[[cameras.NAME.zones]]`` or
the config's ``[[safety.zones]]`` (the file's comments and layout kept), or
the zone CSV. A new zone asks for its name at once; ``r`` renames the zone
selected.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from coral_mfg.analytics.zones import KeepoutZone, place_zone
from coral_mfg.config.zone_file import Shapes
from coral_mfg.config.zones import ZoneSpec, relative_points
from coral_mfg.core.errors import ConfigError
from coral_mfg.core.names import name_problem
from coral_mfg.outputs.overlay import WHITE
from coral_mfg.render.scene import Layer, rect, rgba, thick_polyline
from coral_mfg.runtime.shape_edit import ShapeEditor
from coral_mfg.runtime.zone_watch import ZoneTarget

log = logging.getLogger(__name__)

GRAB_PX = 12.0  # how close a click must be to a vertex or an edge
HANDLE_PX = 7.0
HELP = ("EDIT  drag vertex | click edge: add | right-click: delete | n: new | r: rename | "
        "Tab: next | Ctrl+S: save | Esc: done")
NAMING_HELP = "NAME  type the zone's name | Enter: done | Esc: keep the old name"


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


class ZoneEditor:
    """Edits one camera's zones in force with the mouse; saves them where they came from."""

    def __init__(self, target: ZoneTarget, shapes: ShapeEditor) -> None:
        self.camera = target.camera
        self.store = target.store
        self.shapes = shapes
        self.placement = target.placement
        self.active = False
        self.selected = 0
        self.dragging: int | None = None
        self.zones: list[KeepoutZone] = list(target.store.zones)
        self.message = ""
        self.naming: str | None = None  # the name being typed, while one is
        self._proposed = False  # naming holds a proposed name: the first key replaces it
        self.saved: tuple[ZoneSpec, ...] = ()  # the zones as last saved (or at entry)
        self._saved_zones: tuple[KeepoutZone, ...] = ()  # the same, placed, to go back to

    # --- mode -----------------------------------------------------------------------------

    def enter(self) -> None:
        self.active = True
        self.zones = list(self.store.zones)
        self.saved, self._saved_zones = self._specs(), tuple(self.zones)
        self.selected = min(self.selected, max(len(self.zones) - 1, 0))
        self.message = ""

    def leave(self) -> bool:
        """Leave edit mode; True when unsaved changes were dropped: the zones in force go
        back to those saved, so outside the editor they are always what the file says
        (a shape half-way through a drag is never left guarding the floor)."""
        self.active = False
        self.dragging = None
        self.naming = None
        if self._specs() == self.saved:
            return False
        self.zones = list(self._saved_zones)
        self.store.preview(self._saved_zones)
        watcher = self.shapes.watcher
        if watcher is not None and watcher.target(self.camera) is not None:
            watcher.reload(self.camera)  # the file as it is now: it may have changed meanwhile
        log.info("unsaved zone changes of %s dropped: the saved zones are in force",
                 self.camera)
        return True

    def help_lines(self) -> tuple[str, str]:
        """What the keys do and what is selected: the two lines of the strip meanwhile,
        under the picture, never over it."""
        if self.naming is not None:
            return NAMING_HELP, f"{self.camera}  name: {self.naming}_  {self.message}"
        return HELP, f"{self.camera}  zone: {self.zone.name if self.zone else '-'}  {self.message}"

    # --- naming ---------------------------------------------------------------------------

    def rename(self) -> None:
        """Start typing a new name for the zone selected."""
        zone = self.zone
        if zone is None:
            return
        if zone.source is not None and zone.source.kind == "csv":
            self.message = "a CSV zone is named after its file: rename the file"
            return
        self.naming, self._proposed = zone.name, False  # edited in place

    def type(self, text: str) -> None:
        if self.naming is not None:
            start = "" if self._proposed else self.naming
            self.naming, self._proposed = (start + text)[:64], False

    def backspace(self) -> None:
        if self.naming is not None:
            self.naming, self._proposed = self.naming[:-1], False

    def cancel_name(self) -> None:
        self.naming, self._proposed = None, False

    def commit_name(self) -> None:
        """The name typed becomes the zone's, if it is a good one and not another's."""
        name, zone = (self.naming or "").strip(), self.zone
        self._proposed = False
        if zone is None:
            self.naming = None
            return
        problem = name_problem(name)
        if problem is not None:
            self.message = f"the name needs to be {problem}"
            return
        if any(z.name == name for i, z in enumerate(self.zones) if i != self.selected):
            self.message = f"another zone is named '{name}'"
            return
        self.naming = None
        self.zones[self.selected] = dataclasses.replace(zone, name=name)
        self._apply()

    # --- helpers --------------------------------------------------------------------------

    @property
    def zone(self) -> KeepoutZone | None:
        return self.zones[self.selected] if self.zones else None

    def _vertex_at(self, p: np.ndarray) -> int | None:
        zone = self.zone
        if zone is None:
            return None
        d = np.linalg.norm(zone.points - p, axis=1)
        i = int(np.argmin(d))
        return i if d[i] <= GRAB_PX else None

    def _edge_at(self, p: np.ndarray) -> int | None:
        zone = self.zone
        if zone is None:
            return None
        pts = zone.points
        dists = [_segment_distance(p, pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts))]
        i = int(np.argmin(dists))
        return i if dists[i] <= GRAB_PX else None

    def _set_points(self, points: np.ndarray) -> None:
        zone = self.zone
        assert zone is not None
        self.zones[self.selected] = zone.with_points(points)
        self._apply()

    def _apply(self) -> None:
        """Put the edited zones in force, unless one is not a valid polygon right now."""
        for z in self.zones:
            try:
                relative_points(z.as_spec(self.placement.picture), f"zone '{z.name}'")
            except ConfigError as exc:
                self.message = f"not applied: {exc}"
                return
        self.message = ""
        self.store.preview(tuple(self.zones))

    # --- input ----------------------------------------------------------------------------

    def press(self, x: float, y: float, right: bool = False) -> None:
        p = np.array([x, y], np.float64)
        vertex = self._vertex_at(p)
        zone = self.zone
        if zone is None:
            return
        if right:
            if vertex is not None:
                if len(zone.points) <= 3:
                    self.message = "a zone needs at least 3 points"
                    return
                self._set_points(np.delete(zone.points, vertex, axis=0))
            return
        if vertex is not None:
            self.dragging = vertex
            return
        edge = self._edge_at(p)
        if edge is not None:
            self._set_points(np.insert(zone.points, edge + 1, p, axis=0))
            self.dragging = edge + 1

    def move(self, x: float, y: float) -> None:
        if self.dragging is None or self.zone is None:
            return
        px, py, pw, ph = self.placement.picture
        points = self.zone.points.copy()
        points[self.dragging] = (float(np.clip(x, px, px + pw)), float(np.clip(y, py, py + ph)))
        self._set_points(points)

    def release(self) -> None:
        self.dragging = None

    def next_zone(self) -> None:
        if self.zones:
            self.selected = (self.selected + 1) % len(self.zones)

    def new_zone(self) -> None:
        source = self.zones[0].source if self.zones else None
        if source is not None and source.kind == "csv":
            self.message = "a CSV file holds one zone: define zones in the config file to add more"
            return
        names = {z.name for z in self.zones}
        n = len(self.zones) + 1
        while f"zone-{n}" in names:
            n += 1
        spec = ZoneSpec(name=f"zone-{n}", units="relative",
                        points=((0.4, 0.4), (0.6, 0.4), (0.6, 0.6), (0.4, 0.6)))
        self.zones.append(place_zone(spec, self.placement.picture, self.placement.whole_box,
                                     source, f"zone '{spec.name}'"))
        self.selected = len(self.zones) - 1
        self._apply()
        self.naming, self._proposed = spec.name, True  # ask for its name at once

    # --- saving ---------------------------------------------------------------------------

    def _specs(self) -> tuple[ZoneSpec, ...]:
        return tuple(z.as_spec(self.placement.picture) for z in self.zones)

    def save(self) -> Path | None:
        """Write the zones back where they came from (through the writer the web view uses:
        the file's comments and layout kept); None when nothing changed."""
        if not self.zones or self.zones[0].source is None:
            raise ConfigError("these zones have no file to be saved to")
        source = self.zones[0].source
        self._apply()
        if self.message:
            raise ConfigError(f"cannot save: {self.message}")
        current = self.shapes.shapes(self.camera)
        specs = self._specs()
        changes = self.shapes.replace(
            self.camera, Shapes(zones=specs, lines=current.lines, presence=current.presence),
            ["zones"], "the window's zone editor", before=self.saved)
        self.saved, self._saved_zones = specs, tuple(self.store.zones)
        if not changes:
            self.message = "nothing to save"
            return None
        log.info("zones saved to %s", source.path)
        self.message = f"saved to {source.path}"
        return source.path

    # --- drawing --------------------------------------------------------------------------

    def draw(self, layer: Layer) -> None:
        """The selected zone's outline and handles (what the keys do is on the strip)."""
        if not self.active:
            return
        for i, z in enumerate(self.zones):
            if i == self.selected:
                layer.solid.append(thick_polyline(z.points, 2.0, rgba(WHITE), closed=True))
                for x, y in z.points:
                    layer.solid.append(rect(x - HANDLE_PX, y - HANDLE_PX, x + HANDLE_PX,
                                            y + HANDLE_PX, rgba(WHITE)))
                    layer.solid.append(rect(x - HANDLE_PX + 2, y - HANDLE_PX + 2,
                                            x + HANDLE_PX - 2, y + HANDLE_PX - 2, rgba(z.color)))
