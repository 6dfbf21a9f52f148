"""The motion gate: detect only when the picture changed, or when it is time to look again.

A camera watching a still scene (a fixture waiting for its part, a belt
stopped between batches) gives the same picture frame after frame; running the
detector on each costs the accelerator time other cameras need. The gate
compares a small, blurred grey copy of each frame with the last one that was
detected on: when too little changed, the frame is held (its objects are the
last ones: nothing moved), and the picture is looked at again at least every
``recheck_s`` all the same, so an object that came in too slowly to count as
motion is still seen.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.core.frame import Frame

#: The width the comparison runs at: enough for a person or a part, cheap to compare.
SMALL_WIDTH = 160
#: A pixel changed when its grey level moved this much (of 255): above sensor noise.
PIXEL_DELTA = 25


def _small(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    h, w = image.shape[:2]
    size = (SMALL_WIDTH, max(1, round(h * SMALL_WIDTH / w)))
    grey = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2GRAY)
    return np.asarray(cv2.GaussianBlur(grey, (5, 5), 0), dtype=np.uint8)


class MotionGate:
    """See the module's docstring; safe to ask from several threads."""

    def __init__(self, area: float, recheck_s: float) -> None:
        self.area = area
        self.recheck_s = recheck_s
        self._reference: npt.NDArray[np.uint8] | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def moved(self, frame: Frame) -> bool:
        """True when ``frame`` should be detected on (it becomes the new reference)."""
        small = _small(frame.image)
        with self._lock:
            ref = self._reference
            due = ref is None or ref.shape != small.shape or (
                frame.clock - self._at >= self.recheck_s)
            if not due:
                assert ref is not None
                changed = np.count_nonzero(cv2.absdiff(small, ref) > PIXEL_DELTA)
                if changed < self.area * small.size:
                    return False
            self._reference, self._at = small, frame.clock
            return True
