"""Keep-out zones and the test of person boxes against them.

Boxes are tested by true geometric intersection (shapely), vectorized over
all boxes of a frame. In ``bottom`` mode the box's bottom edge (the feet) must
touch or cross the zone, so a zone lying between the feet still counts; in
``whole_box`` mode any overlap counts.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
import shapely

from coral_mfg.errors import ConfigError, read_user_text


class ZoneMode(StrEnum):
    BOTTOM = "bottom"
    WHOLE_BOX = "whole_box"


@dataclass(frozen=True, eq=False)
class KeepoutZone:
    name: str
    points: npt.NDArray[np.float64]  # (K, 2) in output-frame pixels
    mode: ZoneMode = ZoneMode.BOTTOM
    polygon: shapely.Polygon = field(init=False)

    def __post_init__(self) -> None:
        polygon = shapely.Polygon(self.points)
        shapely.prepare(polygon)
        object.__setattr__(self, "polygon", polygon)

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
    polygon = shapely.Polygon(points)
    if not polygon.is_valid:
        reason = shapely.is_valid_reason(polygon)
        raise ConfigError(f"{where}: the zone polygon is invalid ({reason}); reorder its points")
    if polygon.area <= 0:
        raise ConfigError(f"{where}: the zone polygon has no area")


def load_csv_zone(path: Path, size: tuple[int, int], whole_box: bool) -> KeepoutZone:
    points = read_points_csv(path)
    check_polygon(points, str(path), size)
    mode = ZoneMode.WHOLE_BOX if whole_box else ZoneMode.BOTTOM
    return KeepoutZone(path.stem, points, mode)
