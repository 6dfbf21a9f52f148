"""A glyph atlas from OpenCV's Hershey font, so labels are real text drawn by GL.

The atlas is rendered once at a large size with anti-aliasing; glyphs are
drawn as textured quads scaled down by the sampler, which keeps them readable
at 960x540 and sharp when the window is enlarged.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

FONT = cv2.FONT_HERSHEY_SIMPLEX
ATLAS_SCALE = 1.2  # OpenCV font scale used to build the atlas
FIRST, LAST = 32, 126  # printable ASCII
PAD = 4


@dataclass(frozen=True)
class Glyph:
    """Where one character sits in the atlas texture and how far it advances."""

    u0: float
    v0: float
    u1: float
    v1: float
    advance: float  # in atlas pixels


@dataclass(frozen=True, eq=False)
class GlyphAtlas:
    """Every printable ASCII glyph in one texture, so text is drawn as textured quads."""

    image: npt.NDArray[np.uint8]  # (H, W) coverage
    glyphs: dict[str, Glyph]
    cell_w: int
    cell_h: int

    @classmethod
    def build(cls) -> GlyphAtlas:
        chars = [chr(c) for c in range(FIRST, LAST + 1)]
        sizes = [cv2.getTextSize(ch, FONT, ATLAS_SCALE, 2) for ch in chars]
        cell_w = max(w for (w, _h), _b in sizes) + 2 * PAD
        ascent = max(h for (_w, h), _b in sizes)
        descent = max(b for _s, b in sizes)
        cell_h = ascent + descent + 2 * PAD
        cols = 16
        rows = (len(chars) + cols - 1) // cols
        image = np.zeros((rows * cell_h, cols * cell_w), np.uint8)
        glyphs = {}
        for i, (ch, ((w, _h), _b)) in enumerate(zip(chars, sizes, strict=True)):
            r, c = divmod(i, cols)
            x, y = c * cell_w, r * cell_h
            cv2.putText(image, ch, (x + PAD, y + PAD + ascent), FONT, ATLAS_SCALE, 255, 2,
                        cv2.LINE_AA)
            h_img, w_img = image.shape
            glyphs[ch] = Glyph(x / w_img, y / h_img, (x + cell_w) / w_img, (y + cell_h) / h_img,
                               float(w))
        return cls(image, glyphs, cell_w, cell_h)

    def quads(
        self, text: str, x: float, y: float, height: float, color: tuple[float, ...]
    ) -> npt.NDArray[np.float32]:
        """Triangles (x, y, u, v, r, g, b, a) for ``text`` with its top-left at x, y.

        ``height`` is the drawn height of an atlas cell in content pixels.
        """
        scale = height / self.cell_h
        out: list[tuple[float, ...]] = []
        pen = x
        for ch in text:
            g = self.glyphs.get(ch) or self.glyphs["?"]
            x0, y0 = pen - PAD * scale, y
            x1, y1 = x0 + self.cell_w * scale, y + height
            quad = [
                (x0, y0, g.u0, g.v0), (x1, y0, g.u1, g.v0), (x1, y1, g.u1, g.v1),
                (x0, y0, g.u0, g.v0), (x1, y1, g.u1, g.v1), (x0, y1, g.u0, g.v1),
            ]
            out.extend((*v, *color) for v in quad)
            pen += (g.advance + 2) * scale
        return np.array(out, np.float32).reshape(-1, 8)

    def width(self, text: str, height: float) -> float:
        scale = height / self.cell_h
        return sum((self.glyphs.get(ch, self.glyphs["?"]).advance + 2) * scale for ch in text)
