"""Presence checks: are the expected objects where they belong?

Each frame counts the objects of the check's label whose centre lies in its
region. A shortfall is reported only once it has lasted ``seconds``, and its
end likewise: a hand passing over a bottle, or a frame the detector missed,
must not raise an alarm and clear it again (no flapping).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely

from coral_mfg.config.zones import PresenceSpec, relative_points
from coral_mfg.core.geometry import Rect, to_rect
from coral_mfg.core.results import ZoneOutline


@dataclass(frozen=True)
class PresenceChange:
    """A check went missing (``missing``) or was restored, with what was seen."""

    check: str
    label: str
    expected: int
    seen: int
    missing: bool


@dataclass
class PresenceCheck:
    """A check placed on the output frame, and its debounced state."""

    spec: PresenceSpec
    region: shapely.Polygon
    label_id: int
    outline: ZoneOutline
    seen: int = 0
    missing: bool = False
    _since: float | None = None  # when the raw state last differed from the reported one

    @property
    def name(self) -> str:
        return self.spec.name

    def update(self, centres: npt.NDArray[np.float64], now: float) -> PresenceChange | None:
        """This frame's object centres (output pixels) of the check's label, at monotonic
        ``now``; a change once the new state has lasted ``seconds``."""
        inside = (shapely.contains_xy(self.region, centres[:, 0], centres[:, 1])
                  if len(centres) else np.zeros(0, bool))
        self.seen = int(np.count_nonzero(inside))
        short = self.seen < self.spec.expected
        if short == self.missing:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        if now - self._since < self.spec.seconds:
            return None
        self.missing, self._since = short, None
        return PresenceChange(self.name, self.spec.label, self.spec.expected, self.seen, short)


def place_check(spec: PresenceSpec, picture: Rect, label_id: int, where: str) -> PresenceCheck:
    """A check on the output frame, where the camera's ``picture`` lies in it."""
    rel = relative_points(spec, f"{where}: presence '{spec.name}'")
    points = to_rect(rel, picture)
    region = shapely.Polygon(points)
    shapely.prepare(region)
    color = (int(spec.color[1:3], 16), int(spec.color[3:5], 16), int(spec.color[5:7], 16))
    outline = ZoneOutline(spec.name, tuple((float(x), float(y)) for x, y in points), color)
    return PresenceCheck(spec, region, label_id, outline)
