"""Keep-out zones placed on the output frame, and the test of person boxes against them.

Boxes are tested by true geometric intersection (shapely), vectorized over
all boxes of a frame. In ``bottom`` mode the box's bottom edge (the feet) must
touch or cross the zone, so a zone lying between the feet still counts; in
``whole_box`` mode any overlap counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
import shapely

from coral_mfg.config.zones import (
    DEBOUNCE_FRAMES,
    ZoneMode,
    ZoneSource,
    ZoneSpec,
    relative_points,
)
from coral_mfg.core.geometry import Rect, from_rect, to_rect
from coral_mfg.core.results import ZoneOutline

Rgb = tuple[int, int, int]


def _rgb(color: str) -> Rgb:
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


@dataclass(frozen=True, eq=False)
class KeepoutZone:
    """A zone placed on the output frame: what every frame's people are tested against."""

    name: str
    points: npt.NDArray[np.float64]  # (K, 2) in output-frame pixels
    mode: ZoneMode = ZoneMode.BOTTOM
    enter_frames: int = DEBOUNCE_FRAMES
    exit_frames: int = DEBOUNCE_FRAMES
    enabled: bool = True
    color: Rgb = (255, 0, 0)
    max_seconds: float | None = None  # a longer stay is a dwell alarm
    spec: ZoneSpec | None = None  # as written, for saving back
    source: ZoneSource | None = None
    polygon: shapely.Polygon = field(init=False)
    outline: ZoneOutline = field(init=False)  # as drawn

    def __post_init__(self) -> None:
        polygon = shapely.Polygon(self.points)
        shapely.prepare(polygon)
        object.__setattr__(self, "polygon", polygon)
        corners = tuple((float(x), float(y)) for x, y in self.points)
        object.__setattr__(self, "outline", ZoneOutline(self.name, corners, self.color))

    def with_points(self, points: npt.NDArray[np.float64]) -> KeepoutZone:
        return replace(self, points=np.asarray(points, np.float64))

    def as_spec(self, picture: Rect) -> ZoneSpec:
        """The zone as written, with its current points in the file's own units."""
        spec = self.spec or ZoneSpec(name=self.name, points=((0, 0), (1, 0), (1, 1)),
                                     units="relative")
        rel = from_rect(self.points, picture)
        pts = rel if spec.units == "relative" else rel * np.array(spec.frame_size, np.float64)
        digits = 4 if spec.units == "relative" else 1
        tidy = tuple((_tidy(round(float(x), digits)), _tidy(round(float(y), digits)))
                     for x, y in pts)
        return spec.model_copy(update={"points": tidy, "name": self.name,
                                       "enabled": self.enabled})

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


def place_zone(
    spec: ZoneSpec, picture: Rect, whole_box: bool, source: ZoneSource | None, where: str
) -> KeepoutZone:
    """A zone on the output frame, where the worker-safety ``picture`` lies in it.

    ``where`` starts every message: the file, and the zone when the file has several.
    """
    rel = relative_points(spec, where)
    mode = spec.mode or ("whole_box" if whole_box else "bottom")
    return KeepoutZone(spec.name, to_rect(rel, picture), ZoneMode(mode), spec.enter_frames,
                       spec.exit_frames, spec.enabled, _rgb(spec.color), spec.max_seconds,
                       spec, source)


def place_zones(
    specs: tuple[ZoneSpec, ...], picture: Rect, whole_box: bool, source: ZoneSource
) -> tuple[KeepoutZone, ...]:
    """Every zone of one file on the output frame, each checked with a message naming it."""
    path = str(source.path)
    return tuple(
        place_zone(s, picture, whole_box, source,
                   path if source.kind == "csv" else f"{path}: zone '{s.name}'")
        for s in specs
    )
