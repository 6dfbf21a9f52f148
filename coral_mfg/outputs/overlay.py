"""What is drawn over a frame, described once for every renderer.

The window and the mp4 recorder both draw from an :class:`Overlay`, built from
the result of the very frame it is drawn on, so a box looks the same in both
and never trails its object.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.core.clock import local_caption
from coral_mfg.core.results import Box, FrameResult, InspectedObject, PersonObject, ZoneOutline

Color = tuple[int, int, int]  # RGB, 0-255
GREEN: Color = (0, 200, 0)
RED: Color = (230, 0, 0)
BLACK: Color = (0, 0, 0)
WHITE: Color = (255, 255, 255)
BOX_THICKNESS = 3
#: the verdict of an anomalous object on a camera without a classifier: already said
ANOMALOUS = "anomalous"
ZONE_THICKNESS = 4


@dataclass(frozen=True)
class BoxMark:
    """A labelled box to draw, in output-frame pixels."""

    box: Box
    color: Color
    label: str
    filled: bool = False


@dataclass(frozen=True)
class PolygonMark:
    """A zone outline to draw, in output-frame pixels."""

    points: tuple[tuple[float, float], ...]
    color: Color
    thickness: int = ZONE_THICKNESS


@dataclass(frozen=True)
class Overlay:
    """Everything drawn over one pane, shared by the window and the recorder."""

    size: tuple[int, int]
    polygons: tuple[PolygonMark, ...]
    boxes: tuple[BoxMark, ...]


def build_overlay(
    result: FrameResult, mask: float | None = None,
    zones: tuple[ZoneOutline, ...] | None = None,
) -> Overlay:
    """What to draw over a result's frame: its zones (or ``zones``, the editor's while it
    edits them), its objects; ``mask`` (a margin, 0.1 = 10 % of the box's size on each
    side) hides every person, seen or predicted, under an opaque box."""
    shown = result.zones if zones is None else zones
    polygons = tuple(PolygonMark(z.points, z.color) for z in shown)
    boxes = []
    for obj in result.objects:
        seen = "predicted" if obj.predicted else f"{obj.score:.2f}"
        if isinstance(obj, PersonObject):
            color = RED if obj.keepout else GREEN
            if mask is not None:
                boxes.append(BoxMark(_grown(obj.box, mask, result.out_size), BLACK, "",
                                     filled=True))
            boxes.append(BoxMark(obj.box, color, f"person: {seen}"))
        elif isinstance(obj, InspectedObject):
            color = RED if obj.passed is False or obj.anomalous else GREEN
            grade = obj.grade or obj.label
            score = obj.grade_score if obj.grade_score is not None else obj.score
            label = f"{grade}: {score:.2f}"
            if obj.anomalous and obj.grade != ANOMALOUS:
                label += f"  ANOMALY {obj.anomaly_score:.2f}"
            label += " (predicted)" if obj.predicted else ""
            boxes.append(BoxMark(obj.box, color, label))
    return Overlay(result.out_size, polygons, tuple(boxes))


def _grown(box: Box, margin: float, size: tuple[int, int]) -> Box:
    x1, y1, x2, y2 = box
    dx, dy = round((x2 - x1) * margin), round((y2 - y1) * margin)
    w, h = size
    return (max(0, x1 - dx), max(0, y1 - dy), min(w, x2 + dx), min(h, y2 + dy))


def _bgr(color: Color) -> tuple[int, int, int]:
    return (color[2], color[1], color[0])


def draw_cv2(image: npt.NDArray[np.uint8], overlay: Overlay) -> None:
    """Draw an overlay in place on a BGR image of ``overlay.size``."""
    for poly in overlay.polygons:
        pts = np.rint(np.array(poly.points)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(image, [pts], True, _bgr(poly.color), poly.thickness, cv2.LINE_AA)
    for mark in overlay.boxes:
        x1, y1, x2, y2 = mark.box
        if mark.filled:
            cv2.rectangle(image, (x1, y1), (x2, y2), _bgr(BLACK), cv2.FILLED)
        if not mark.label:
            continue  # a privacy mask: nothing to say about it
        cv2.rectangle(image, (x1, y1), (x2, y2), _bgr(mark.color), BOX_THICKNESS)
        font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.6
        (tw, th), base = cv2.getTextSize(mark.label, font, scale, 1)
        ty = max(y1 - 4, th + 4)
        cv2.rectangle(image, (x1, ty - th - 4), (x1 + tw + 4, ty + base - 2), _bgr(mark.color), -1)
        cv2.putText(image, mark.label, (x1 + 2, ty - 2), font, scale, _bgr(WHITE), 1, cv2.LINE_AA)


def draw_stamp(image: npt.NDArray[np.uint8], text: str, at: tuple[int, int] = (0, 0)) -> None:
    """A caption on a dark band at the picture's top left, legible on any picture."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    x, y = at
    cv2.rectangle(image, (x, y), (x + tw + 8, y + th + base + 8), _bgr(BLACK), cv2.FILLED)
    cv2.putText(image, text, (x + 4, y + th + 4), font, scale, _bgr(WHITE), 1, cv2.LINE_AA)


def render_pane(result: FrameResult, overlay: Overlay) -> npt.NDArray[np.uint8]:
    """The frame fitted to the output size (black bars, never stretched) with its overlay."""
    w, h = result.out_size
    x, y, pw, ph = result.picture
    small = cv2.resize(result.frame.image, (pw, ph), interpolation=cv2.INTER_LINEAR)
    if (pw, ph) == (w, h):
        pane = np.asarray(small, dtype=np.uint8)
    else:
        pane = np.zeros((h, w, 3), np.uint8)
        pane[y:y + ph, x:x + pw] = small
    draw_cv2(pane, overlay)
    return pane


def caption(stream: str, wall: float) -> str:
    """``worker_safety  2026-11-24 11:30:05.250 +01:00``: local time with its offset."""
    return f"{stream}  {local_caption(wall)}"


def annotated_pane(result: FrameResult, mask: float | None) -> npt.NDArray[np.uint8]:
    """A pane as it is seen away from the window (recording, snapshots, web view): the
    frame, its overlay (with the zones it was checked against), and a caption with the
    stream's name and the wall-clock time of capture, so a picture can be matched to an
    incident."""
    pane = render_pane(result, build_overlay(result, mask))
    draw_stamp(pane, caption(result.stream, result.frame.wall), result.picture[:2])
    return pane
