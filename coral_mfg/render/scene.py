"""Overlays and HUD as triangle arrays in content pixels: pure numpy, no GL.

The window uploads these arrays; keeping them GL-free lets the geometry be
tested on its own and keeps all drawing decisions in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from coral_mfg.outputs.overlay import BLACK, BOX_THICKNESS, WHITE, Color, Overlay
from coral_mfg.outputs.panel import ALARM_RED, BORDER_PX, LINE_HEIGHT, STRIP_BG, STRIP_HEIGHT, Panel
from coral_mfg.render.text import GlyphAtlas

LABEL_HEIGHT = 20.0  # content pixels of a label's text line
HUD_HEIGHT = 20.0
HUD_BG = (0.0, 0.0, 0.0, 0.6)
STATUS_HEIGHT = 56.0
STATUS_RED: Color = (255, 60, 60)

Solid = npt.NDArray[np.float32]  # (N, 6): x, y, r, g, b, a
Textured = npt.NDArray[np.float32]  # (N, 8): x, y, u, v, r, g, b, a


def rgba(color: Color, alpha: float = 1.0) -> tuple[float, float, float, float]:
    return (color[0] / 255.0, color[1] / 255.0, color[2] / 255.0, alpha)


def rect(x0: float, y0: float, x1: float, y1: float, color: tuple[float, ...]) -> Solid:
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y0), (x1, y1), (x0, y1)]
    return np.array([(*c, *color) for c in corners], np.float32)


def thick_polyline(
    points: npt.NDArray[np.floating], thickness: float, color: tuple[float, ...], closed: bool
) -> Solid:
    """Quads along each segment, extended by half the thickness so corners close.

    Core-profile GL has no wide lines, so thickness is geometry.
    """
    pts = np.asarray(points, np.float64)
    if closed:
        pts = np.vstack([pts, pts[:1]])
    p, q = pts[:-1], pts[1:]
    d = q - p
    length = np.linalg.norm(d, axis=1, keepdims=True)
    keep = length[:, 0] > 0
    p, q, d, length = p[keep], q[keep], d[keep], length[keep]
    if len(p) == 0:
        return np.zeros((0, 6), np.float32)
    u = d / length * (thickness / 2.0)
    n = np.stack([-u[:, 1], u[:, 0]], axis=1)
    a, b = p - u + n, p - u - n
    c, e = q + u + n, q + u - n
    tris = np.stack([a, b, c, c, b, e], axis=1).reshape(-1, 2)
    colors = np.broadcast_to(np.array(color, np.float64), (len(tris), 4))
    return np.hstack([tris, colors]).astype(np.float32)


@dataclass
class Layer:
    """Everything drawn over one frame: solid triangles, then text."""

    solid: list[Solid] = field(default_factory=list)
    text: list[Textured] = field(default_factory=list)

    def arrays(self) -> tuple[Solid, Textured]:
        solid = np.vstack(self.solid) if self.solid else np.zeros((0, 6), np.float32)
        text = np.vstack(self.text) if self.text else np.zeros((0, 8), np.float32)
        return solid, text


def overlay_layer(overlay: Overlay, atlas: GlyphAtlas, dx: float, layer: Layer,
                  dy: float = 0.0) -> None:
    """Add an overlay (in pane pixels) to ``layer``, its pane at (``dx``, ``dy``)."""
    for poly in overlay.polygons:
        pts = np.array(poly.points, np.float64) + np.array([dx, dy])
        layer.solid.append(thick_polyline(pts, poly.thickness, rgba(poly.color),
                                          closed=len(poly.points) > 2))
        if poly.name:
            nx, ny = poly.name_at
            tw = atlas.width(poly.name, LABEL_HEIGHT)
            nx = min(max(nx, 0.0), overlay.size[0] - tw - 6) + dx
            ny = min(max(ny - LABEL_HEIGHT, 0.0), overlay.size[1] - LABEL_HEIGHT) + dy
            layer.solid.append(rect(nx, ny, nx + tw + 6, ny + LABEL_HEIGHT, rgba(poly.color)))
            layer.text.append(atlas.quads(poly.name, nx + 3, ny, LABEL_HEIGHT, rgba(WHITE)))
    for mark in overlay.boxes:
        x1, y1, x2, y2 = (float(v) for v in mark.box)
        x1, x2, y1, y2 = x1 + dx, x2 + dx, y1 + dy, y2 + dy
        if mark.filled:
            layer.solid.append(rect(x1, y1, x2, y2, rgba(BLACK)))
        if not mark.label:
            continue  # a privacy mask: nothing to say about it
        corners = np.array([(x1, y1), (x2, y1), (x2, y2), (x1, y2)])
        layer.solid.append(thick_polyline(corners, BOX_THICKNESS, rgba(mark.color), closed=True))
        tw = atlas.width(mark.label, LABEL_HEIGHT)
        ty = max(y1 - LABEL_HEIGHT, dy)
        layer.solid.append(rect(x1, ty, x1 + tw + 6, ty + LABEL_HEIGHT, rgba(mark.color)))
        layer.text.append(atlas.quads(mark.label, x1 + 3, ty, LABEL_HEIGHT, rgba(WHITE)))


def panel_layer(panel: Panel, atlas: GlyphAtlas, pane: tuple[float, float, float, float],
                layer: Layer) -> None:
    """A camera's strip under its picture (``pane``: x, y, w, h of the picture), and the
    alarm border round the picture."""
    x, y, w, h = pane
    top = y + h
    layer.solid.append(rect(x, top, x + w, top + STRIP_HEIGHT,
                            rgba(ALARM_RED if panel.alarm else STRIP_BG)))
    if panel.alarm:
        b, red = float(BORDER_PX), rgba(ALARM_RED)
        layer.solid.extend([rect(x, y, x + w, y + b, red), rect(x, top - b, x + w, top, red),
                            rect(x, y, x + b, top, red), rect(x + w - b, y, x + w, top, red)])
    layer.solid.append(rect(x + 6, top + 7, x + 18, top + 19, rgba(panel.dot)))
    size = LINE_HEIGHT - 3
    for row, line in enumerate(panel.lines):
        tx = x + (24 if row == 0 else 8)
        ty = top + 4 + row * LINE_HEIGHT
        for segment in line:
            layer.text.append(atlas.quads(segment.text, tx, ty, size, rgba(segment.color)))
            tx += atlas.width(segment.text, size)


def hud_layer(
    lines: list[str], atlas: GlyphAtlas, x: float, y: float, layer: Layer, *,
    color: Color = WHITE,
) -> None:
    if not lines:
        return
    width = max(atlas.width(line, HUD_HEIGHT) for line in lines) + 12
    layer.solid.append(rect(x, y, x + width, y + HUD_HEIGHT * len(lines) + 8, HUD_BG))
    for i, line in enumerate(lines):
        layer.text.append(atlas.quads(line, x + 6, y + 4 + i * HUD_HEIGHT, HUD_HEIGHT,
                                      rgba(color)))


def status_layer(
    message: str, atlas: GlyphAtlas, pane: tuple[float, float, float, float], layer: Layer
) -> None:
    """Dim a pane and say why it shows no live video (e.g. NO SIGNAL and the reason)."""
    x0, y0, w, h = pane
    layer.solid.append(rect(x0, y0, x0 + w, y0 + h, (0.0, 0.0, 0.0, 0.7)))
    title, _, reason = message.partition(": ")
    big = STATUS_HEIGHT
    tw = atlas.width(title, big)
    cy = y0 + h / 2 - big
    layer.text.append(atlas.quads(title, x0 + (w - tw) / 2, cy, big, rgba(STATUS_RED)))
    if reason:
        words, lines, line = reason.split(), [], ""
        for word in words:  # wrap to the pane width
            trial = f"{line} {word}".strip()
            if atlas.width(trial, HUD_HEIGHT) > w - 40 and line:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
        for i, text in enumerate(lines[:4]):
            lw = atlas.width(text, HUD_HEIGHT)
            layer.text.append(atlas.quads(text, x0 + (w - lw) / 2, cy + big + 8 + i * HUD_HEIGHT,
                                          HUD_HEIGHT, rgba(WHITE)))
