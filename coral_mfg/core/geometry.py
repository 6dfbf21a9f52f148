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


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows) of a grid holding ``count`` pictures: 1, 2 side by side, 2x2, 3x3.

    Square-ish grids keep each picture as large as a wide screen allows; a row
    of three would leave each pane a third of the width and most of the height empty.
    """
    if count <= 1:
        return (1, 1)
    if count == 2:
        return (2, 1)
    if count <= 4:
        return (2, 2)
    side = 3
    while side * side < count:
        side += 1
    return (side, side)


def grid_cells(count: int, area: tuple[int, int]) -> list[Rect]:
    """Where each of ``count`` pictures goes in ``area`` (w, h), row by row, cells of equal
    size (whole, even pixels, so an encoder takes them)."""
    cols, rows = grid_shape(count)
    w, h = area
    cw, ch = (w // cols) & ~1, (h // rows) & ~1
    return [((i % cols) * cw, (i // cols) * ch, cw, ch) for i in range(count)]
