"""Counting lines: tracked objects crossing a line, once per crossing, in their direction.

A track's point (a person's feet, the centre of an inspected object) is on one
side of the line or the other; a crossing is counted when the point, having
been clearly on one side, is clearly on the other, and passes between the
line's ends. "Clearly" means farther than a band around the line: a box
jittering on the line moves its point back and forth by a few pixels, and
without the band every jitter would count. Only confirmed tracks count (seen
on enough frames to be real objects), so a flicker of the detector is never a
part passing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from coral_mfg.config.zones import LineSpec, relative_points
from coral_mfg.core.geometry import Rect, to_rect
from coral_mfg.core.results import ZoneOutline

#: Half the width of the band around a line, as a share of the line's length (at least
#: :data:`MIN_BAND_PX`): a point inside the band is on neither side.
BAND_SHARE = 0.03
MIN_BAND_PX = 6.0
#: A crossing counts between the line's ends, with this much (of its length) to spare.
END_MARGIN = 0.05


@dataclass(frozen=True)
class Crossing:
    """A track crossed a line, in one of its two directions."""

    line: str
    direction: str
    track: int


@dataclass
class CountingLine:
    """A line placed on the output frame, and who is on which side of it."""

    spec: LineSpec
    a: npt.NDArray[np.float64]  # its first end, output pixels
    b: npt.NDArray[np.float64]
    labels: frozenset[str]  # detector labels counted
    outline: ZoneOutline
    #: per track (by kind and id), the side it was last clearly on: +1 right, -1 left
    sides: dict[tuple[str, int], int] = field(default_factory=dict)
    #: crossings by direction and, for inspected objects, grade (None for people)
    counts: dict[tuple[str, str | None], int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def band(self) -> float:
        return max(MIN_BAND_PX, BAND_SHARE * float(np.linalg.norm(self.b - self.a)))

    def side(self, point: npt.NDArray[np.float64]) -> int:
        """+1 right of the line (as seen from its first end), -1 left, 0 within the band or
        beyond its ends."""
        d = self.b - self.a
        length = float(np.linalg.norm(d))
        rel = point - self.a
        along = float(np.dot(rel, d)) / length
        if not -END_MARGIN * length <= along <= (1 + END_MARGIN) * length:
            return 0
        across = float(d[0] * rel[1] - d[1] * rel[0]) / length  # image y points down
        if abs(across) <= self.band:
            return 0
        return 1 if across > 0 else -1

    def update(self, kind: str, track: int, point: npt.NDArray[np.float64],
               confirmed: bool) -> Crossing | None:
        """The track's point on this frame; a crossing when it changed sides."""
        now = self.side(point)
        if now == 0:
            return None
        key = (kind, track)
        before = self.sides.get(key)
        self.sides[key] = now
        if before is None or before == now or not confirmed:
            return None
        direction = self.spec.directions[0] if now > 0 else self.spec.directions[1]
        return Crossing(self.name, direction, track)

    def count(self, direction: str, grade: str | None) -> None:
        key = (direction, grade)
        self.counts[key] = self.counts.get(key, 0) + 1

    def forget(self, live: set[tuple[str, int]]) -> None:
        """Drop the sides of tracks that ended, so memory stays bounded."""
        for key in [k for k in self.sides if k not in live]:
            del self.sides[key]


def place_line(spec: LineSpec, picture: Rect, labels: frozenset[str], where: str
               ) -> CountingLine:
    """A line on the output frame, where the camera's ``picture`` lies in it."""
    rel = relative_points(spec, f"{where}: line '{spec.name}'")
    a, b = to_rect(rel, picture)
    color = (int(spec.color[1:3], 16), int(spec.color[3:5], 16), int(spec.color[5:7], 16))
    outline = ZoneOutline(spec.name, ((float(a[0]), float(a[1])), (float(b[0]), float(b[1]))),
                          color)
    return CountingLine(spec, np.asarray(a, np.float64), np.asarray(b, np.float64), labels,
                        outline)
