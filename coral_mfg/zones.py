"""Keep-out zones and the test of person boxes against them.

Boxes are tested by true geometric intersection (shapely), vectorized over
all boxes of a frame. In ``bottom`` mode the box's bottom edge (the feet) must
touch or cross the zone, so a zone lying between the feet still counts; in
``whole_box`` mode any overlap counts.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from coral_mfg.errors import ConfigError, read_user_text


class ZoneMode(StrEnum):
    BOTTOM = "bottom"
    WHOLE_BOX = "whole_box"


Rgb = tuple[int, int, int]
RED: Rgb = (255, 0, 0)
ZONE_KEYS = {"name", "points", "units", "mode", "enter_frames", "exit_frames", "enabled", "color"}


@dataclass(frozen=True)
class ZoneSource:
    """Where a zone came from, so the editor can save it back there."""

    path: Path
    kind: str  # "toml" or "csv"


@dataclass(frozen=True, eq=False)
class KeepoutZone:
    name: str
    points: npt.NDArray[np.float64]  # (K, 2) in output-frame pixels
    mode: ZoneMode = ZoneMode.BOTTOM
    enter_frames: int = 1
    exit_frames: int = 1
    enabled: bool = True
    color: Rgb = RED
    units: str = "pixels"
    source: ZoneSource | None = None
    polygon: shapely.Polygon = field(init=False)

    def __post_init__(self) -> None:
        polygon = shapely.Polygon(self.points)
        shapely.prepare(polygon)
        object.__setattr__(self, "polygon", polygon)

    def with_points(self, points: npt.NDArray[np.float64]) -> KeepoutZone:
        return replace(self, points=np.asarray(points, np.float64))

    def file_points(self, size: tuple[int, int]) -> list[list[float]]:
        """Points in the units the file uses (pixels, or 0-1 of the frame)."""
        pts = self.points / np.array(size, np.float64) if self.units == "relative" else self.points
        digits = 4 if self.units == "relative" else 1
        return [[_tidy(round(float(x), digits)), _tidy(round(float(y), digits))] for x, y in pts]

    def contains_boxes(self, xyxy: npt.NDArray[np.number]) -> npt.NDArray[np.bool_]:
        """Which boxes (N, 4 as x1, y1, x2, y2) are in the zone under its mode."""
        if len(xyxy) == 0:
            return np.zeros(0, dtype=bool)
        boxes = np.asarray(xyxy, dtype=np.float64)
        if self.mode is ZoneMode.BOTTOM:
            feet = np.stack(
                [boxes[:, [0, 3]], boxes[:, [2, 3]]], axis=1
            )  # (N, 2 points, 2 coords)
            geoms = shapely.linestrings(feet)
        else:
            geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
        return np.asarray(shapely.intersects(geoms, self.polygon), dtype=bool)


def _tidy(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def read_points_csv(path: Path) -> npt.NDArray[np.float64]:
    """Zone points from the original demo's CSV: an ``x,y`` header, then one point a row."""
    text = read_user_text(path, "keep-out points file",
                          "pass an x,y CSV to --keepout_points_path", ConfigError)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or [c.strip().lower() for c in rows[0]] != ["x", "y"]:
        raise ConfigError(f"{path}: the first line must be the header 'x,y'")
    points = []
    for line_no, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != 2:
                raise ValueError
            points.append((float(row[0]), float(row[1])))
        except ValueError:
            raise ConfigError(
                f"{path}, line {line_no}: expected two numbers 'x,y', got {','.join(row)!r}"
            ) from None
    if len(points) < 3:
        raise ConfigError(f"{path}: a keep-out zone needs at least 3 points, found {len(points)}")
    arr = np.array(points, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{path}: points must be finite numbers")
    return arr


def check_polygon(points: npt.NDArray[np.float64], where: str, size: tuple[int, int]) -> None:
    """Reject zones that cannot mean what the user intends."""
    w, h = size
    outside = (points[:, 0] < 0) | (points[:, 0] > w) | (points[:, 1] < 0) | (points[:, 1] > h)
    if outside.any():
        x, y = points[int(np.argmax(outside))]
        raise ConfigError(
            f"{where}: point ({x:g}, {y:g}) is outside the {w}x{h} output frame; "
            "zone points are in output pixels"
        )
    centred = points - points.mean(axis=0)
    if np.linalg.matrix_rank(centred, tol=1e-9) < 2:
        raise ConfigError(f"{where}: the zone polygon has no area (its points are on a line)")
    polygon = shapely.Polygon(points)
    if not polygon.is_valid:
        reason = shapely.is_valid_reason(polygon)
        raise ConfigError(
            f"{where}: the zone polygon crosses itself ({reason}); reorder its points"
        )


def load_csv_zone(path: Path, size: tuple[int, int], whole_box: bool) -> KeepoutZone:
    """The original demo's single zone: no debounce, as it had none."""
    points = read_points_csv(path)
    check_polygon(points, str(path), size)
    mode = ZoneMode.WHOLE_BOX if whole_box else ZoneMode.BOTTOM
    return KeepoutZone(path.stem, points, mode, source=ZoneSource(path, "csv"))


def _int_at_least(value: Any, low: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what} must be a whole number >= {low}, got {value!r}")
    return value


def _color(value: Any) -> Rgb:
    if isinstance(value, str) and len(value) == 7 and value.startswith("#"):
        try:
            return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
        except ValueError:
            pass
    raise ValueError(f"color must be '#rrggbb', got {value!r}")


def _points(value: Any) -> npt.NDArray[np.float64]:
    if not isinstance(value, list):
        raise ValueError(f"points must be a list of [x, y] pairs, got {value!r}")
    out = []
    for i, p in enumerate(value, start=1):
        if (
            not isinstance(p, list)
            or len(p) != 2
            or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in p)
        ):
            raise ValueError(f"point {i} must be two numbers [x, y], got {p!r}")
        if not all(np.isfinite(c) for c in p):
            raise ValueError(f"point {i} must be finite numbers, got {p!r}")
        out.append((float(p[0]), float(p[1])))
    if len(out) < 3:
        raise ValueError(f"needs at least 3 points, found {len(out)}")
    return np.array(out, np.float64)


def parse_zones(
    raw: Any, where: str, size: tuple[int, int], whole_box: bool, source: ZoneSource | None
) -> tuple[KeepoutZone, ...]:
    """Zones from a config's ``[[safety.zones]]`` tables, checked with messages that name them."""
    if not isinstance(raw, list) or not all(isinstance(z, dict) for z in raw):
        raise ConfigError(f"{where}: safety.zones must be [[safety.zones]] tables")
    zones: list[KeepoutZone] = []
    seen: set[str] = set()
    for i, table in enumerate(raw, start=1):
        label = f"zone {i}"
        try:
            name = table.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ValueError("needs a name (a non-empty string)")
            label = f"zone '{name}'"
            unknown = sorted(set(table) - ZONE_KEYS)
            if unknown:
                raise ValueError(f"unknown key '{unknown[0]}'; known: "
                                 + ", ".join(sorted(ZONE_KEYS)))
            if name in seen:
                raise ValueError("the name is used twice; zone names must be unique")
            seen.add(name)
            units = table.get("units", "pixels")
            if units not in ("pixels", "relative"):
                raise ValueError(f"units must be 'pixels' or 'relative', got {units!r}")
            default_mode = "whole_box" if whole_box else "bottom"
            mode = table.get("mode", default_mode)
            if mode not in ("bottom", "whole_box"):
                raise ValueError(f"mode must be 'bottom' or 'whole_box', got {mode!r}")
            enabled = table.get("enabled", True)
            if not isinstance(enabled, bool):
                raise ValueError(f"enabled must be true or false, got {enabled!r}")
            points = _points(table.get("points"))
            if units == "relative":
                if ((points < 0) | (points > 1)).any():
                    raise ValueError("relative points must be between 0 and 1")
                points = points * np.array(size, np.float64)
            zone = KeepoutZone(
                name, points, ZoneMode(mode),
                enter_frames=_int_at_least(table.get("enter_frames", 3), 1, "enter_frames"),
                exit_frames=_int_at_least(table.get("exit_frames", 3), 1, "exit_frames"),
                enabled=enabled, color=_color(table.get("color", "#ff0000")), units=units,
                source=source,
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: {label}: {exc}") from None
        check_polygon(zone.points, f"{where}: {label}", size)
        zones.append(zone)
    return tuple(zones)


def zones_from_settings(settings: dict[str, Any]) -> tuple[KeepoutZone, ...]:
    """The config's zones, or the legacy CSV zone when the config has none or the flag is given.

    ``settings["zones"]`` holds the raw config tables (None when there are none)
    and ``settings["zones_from"]`` says which applies: ``"config"`` or ``"csv"``.
    """
    if settings.get("zones_from") == "config":
        return reload_zones(settings, ZoneSource(Path(settings["config"]), "toml"),
                            settings["zones"])
    return reload_zones(settings, ZoneSource(Path(settings["keepout_points_path"]), "csv"))


def reload_zones(
    settings: dict[str, Any], source: ZoneSource, raw: Any = None
) -> tuple[KeepoutZone, ...]:
    """The zones from ``source`` (read again unless its ``raw`` config tables are given)."""
    size = (settings["width"], settings["height"])
    whole_box = bool(settings["safety_check_whole_box"])
    if source.kind == "csv":
        return (load_csv_zone(source.path, size, whole_box),)
    if raw is None:
        from coral_mfg.config import read_config

        raw = read_config(source.path).get("zones")
        if not raw:
            raise ConfigError(f"{source.path}: it no longer defines any [[safety.zones]]")
    return parse_zones(raw, str(source.path), size, whole_box, source)
