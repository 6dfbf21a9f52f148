"""The on-screen zone editor: drag, add and delete vertices, add zones, save.

Edits apply live (a zone that would cross itself is held back until it is
valid again) and Ctrl+S writes them back to the file they came from: the
camera's ``[[cameras.NAME.zones]]`` or the config's ``[[safety.zones]]`` (the
file's other settings kept), or the zone CSV.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import numpy as np
import tomli_w

from coral_mfg.analytics.zones import KeepoutZone, place_zone
from coral_mfg.config.zones import ZoneSource, ZoneSpec, relative_points
from coral_mfg.core.errors import ConfigError
from coral_mfg.core.files import replacing
from coral_mfg.outputs.overlay import WHITE
from coral_mfg.render.scene import HUD_HEIGHT, Layer, rect, rgba, thick_polyline
from coral_mfg.render.text import GlyphAtlas
from coral_mfg.runtime.zone_watch import ZoneTarget, ZoneWatcher

log = logging.getLogger(__name__)

GRAB_PX = 12.0  # how close a click must be to a vertex or an edge
HANDLE_PX = 7.0
HELP = ("EDIT  drag vertex | click edge: add | right-click: delete | n: new zone | "
        "Tab: next | Ctrl+S: save | Esc: done")


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


class ZoneEditor:
    """Edits one camera's zones in force with the mouse; saves them where they came from."""

    def __init__(self, target: ZoneTarget, watcher: ZoneWatcher, size: tuple[int, int]) -> None:
        self.camera = target.camera
        self.store = target.store
        self.size = size  # the pane, in output pixels
        self.watcher = watcher
        self.placement = target.placement
        self.active = False
        self.selected = 0
        self.dragging: int | None = None
        self.zones: list[KeepoutZone] = list(target.store.zones)
        self.message = ""

    # --- mode -----------------------------------------------------------------------------

    def enter(self) -> None:
        self.active = True
        self.zones = list(self.store.zones)
        self.selected = min(self.selected, max(len(self.zones) - 1, 0))
        self.message = ""

    def leave(self) -> None:
        self.active = False
        self.dragging = None

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
        self.store.replace(tuple(self.zones))

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

    # --- saving ---------------------------------------------------------------------------

    def save(self) -> Path:
        """Write the zones back where they came from; other settings in the file are kept."""
        if not self.zones or self.zones[0].source is None:
            raise ConfigError("these zones have no file to be saved to")
        source = self.zones[0].source
        self._apply()
        if self.message:
            raise ConfigError(f"cannot save: {self.message}")
        if source.kind == "csv":
            points = self.zones[0].as_spec(self.placement.picture).points
            text = "x,y\n" + "".join(f"{x},{y}\n" for x, y in points)
        else:
            text = self._toml(source)
        with replacing(source.path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        self.watcher.mark_saved()
        log.info("zones saved to %s", source.path)
        self.message = f"saved to {source.path}"
        return source.path

    def _toml(self, source: ZoneSource) -> str:
        data = tomllib.loads(source.path.read_text(encoding="utf-8"))
        tables = [z.as_spec(self.placement.picture).to_table() for z in self.zones]
        if source.camera is not None:
            camera = data.get("cameras", {}).get(source.camera)
            if not isinstance(camera, dict):
                raise ConfigError(f"{source.path}: camera '{source.camera}' is no longer in "
                                  "it; its zones were not saved")
            camera["zones"] = tables
        else:
            data.setdefault("safety", {})["zones"] = tables
        return tomli_w.dumps(data)

    # --- drawing --------------------------------------------------------------------------

    def draw(self, atlas: GlyphAtlas, layer: Layer) -> None:
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
        w, h = self.size
        lines = [HELP, f"{self.camera}  zone: {self.zone.name if self.zone else '-'}  "
                       f"{self.message}"]
        y0 = h - HUD_HEIGHT * len(lines) - 10
        layer.solid.append(rect(0, y0 - 4, w, h, (0.0, 0.0, 0.0, 0.7)))
        for i, line in enumerate(lines):
            layer.text.append(atlas.quads(line[:120], 8, y0 + i * HUD_HEIGHT, HUD_HEIGHT - 2,
                                          rgba(WHITE)))
