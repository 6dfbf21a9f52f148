"""Where a picture lands in a frame of another shape: scaled to fit, centred, never stretched.

The recording, the window and the boxes and zones drawn on them all use this
one rule, so a box always sits on its object whatever the output size.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Rect = tuple[int, int, int, int]  # x, y, w, h


def letterbox(frame: tuple[int, int], picture: tuple[int, int]) -> Rect:
    """The largest ``picture``-shaped rectangle centred in ``frame`` (x, y, w, h)."""
    fw, fh = frame
    pw, ph = picture
    scale = min(fw / pw, fh / ph)
    w, h = max(1, round(pw * scale)), max(1, round(ph * scale))
    return ((fw - w) // 2, (fh - h) // 2, w, h)


def to_rect(normalized: npt.NDArray[np.floating], rect: Rect) -> npt.NDArray[np.float64]:
    """Points or boxes given as 0-1 fractions of a picture, in pixels of the frame it fills.

    ``normalized`` is (..., 2k) with x, y pairs, e.g. (N, 4) boxes or (K, 2) points.
    """
    x, y, w, h = rect
    arr = np.asarray(normalized, np.float64)
    pairs = arr.reshape((*arr.shape[:-1], arr.shape[-1] // 2, 2))
    out = pairs * np.array([w, h], np.float64) + np.array([x, y], np.float64)
    return out.reshape(arr.shape)


def from_rect(pixels: npt.NDArray[np.floating], rect: Rect) -> npt.NDArray[np.float64]:
    """The inverse of :func:`to_rect`: frame pixels as 0-1 fractions of the picture."""
    x, y, w, h = rect
    arr = np.asarray(pixels, np.float64)
    pairs = arr.reshape((*arr.shape[:-1], arr.shape[-1] // 2, 2))
    out = (pairs - np.array([x, y], np.float64)) / np.array([w, h], np.float64)
    return out.reshape(arr.shape)
