"""What is drawn over a frame, described once for every renderer.

The window and the mp4 recorder both draw from an :class:`Overlay`, built from
the result of the very frame it is drawn on, so a box looks the same in both
and never trails its object; and from the camera's :class:`~coral_mfg.outputs.panel.Panel`,
the strip under the picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.core.names import display_name
from coral_mfg.core.results import Box, FrameResult, InspectedObject, PersonObject, ZoneOutline
from coral_mfg.core.status import RunStatus
from coral_mfg.outputs.panel import (
    ALARM_RED,
    BORDER_PX,
    LINE_HEIGHT,
    STRIP_BG,
    STRIP_HEIGHT,
    Panel,
    build_panel,
)

Color = tuple[int, int, int]  # RGB, 0-255
GREEN: Color = (0, 200, 0)
RED: Color = (230, 0, 0)
GREY: Color = (128, 128, 128)
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
    """A zone, line or presence region to draw, in output-frame pixels, with its name."""

    points: tuple[tuple[float, float], ...]
    color: Color
    thickness: int = ZONE_THICKNESS
    name: str = ""

    @property
    def name_at(self) -> tuple[float, float]:
        """Where its name goes: by its top-most corner (a line's first end)."""
        if len(self.points) == 2:
            return self.points[0]
        return min(self.points, key=lambda p: (p[1], p[0]))


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
    polygons = tuple(PolygonMark(z.points, z.color, name=z.name) for z in shown)
    px, py, pw, ph = result.picture
    boxes = []
    for obj in result.objects:
        x1, y1, x2, y2 = obj.box
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if obj.predicted and not (px <= cx < px + pw and py <= cy < py + ph):
            continue  # a track coasting off the picture: the object has left it
        if isinstance(obj, PersonObject):
            color = RED if obj.keepout else GREEN
            if mask is not None:
                boxes.append(BoxMark(_grown(obj.box, mask, result.out_size), BLACK, "",
                                     filled=True))
            label = "person" + ("" if obj.predicted else f" {obj.score:.2f}")
            if obj.keepout:
                label += " IN " + ", ".join(obj.zones)
        elif isinstance(obj, InspectedObject):
            color = RED if obj.passed is False or obj.anomalous else GREEN
            if obj.grade is None:
                label = display_name(obj.label)
            else:
                verdict = {True: " PASS", False: " FAIL", None: ""}[obj.passed]
                label = f"{display_name(obj.grade)}{verdict}"
            score = obj.grade_score if obj.grade_score is not None else obj.score
            if not obj.predicted:
                label += f" {score:.2f}"
            if obj.anomalous and obj.grade != ANOMALOUS and obj.anomaly_score is not None:
                label += f" ANOMALY {obj.anomaly_score:.2f}"
        else:
            continue
        if obj.predicted:
            color = _faded(color)  # where the track expects it, not where it was seen
        boxes.append(BoxMark(obj.box, color, label))
    return Overlay(result.out_size, polygons, tuple(boxes))


def _faded(color: Color) -> Color:
    r, g, b = color
    return ((r + GREY[0]) // 2, (g + GREY[1]) // 2, (b + GREY[2]) // 2)


def _grown(box: Box, margin: float, size: tuple[int, int]) -> Box:
    x1, y1, x2, y2 = box
    dx, dy = round((x2 - x1) * margin), round((y2 - y1) * margin)
    w, h = size
    return (max(0, x1 - dx), max(0, y1 - dy), min(w, x2 + dx), min(h, y2 + dy))


def _bgr(color: Color) -> tuple[int, int, int]:
    return (color[2], color[1], color[0])


def draw_cv2(image: npt.NDArray[np.uint8], overlay: Overlay) -> None:
    """Draw an overlay in place on a BGR image of ``overlay.size``."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    for poly in overlay.polygons:
        pts = np.rint(np.array(poly.points)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(image, [pts], len(poly.points) > 2, _bgr(poly.color), poly.thickness,
                      cv2.LINE_AA)
        if poly.name:
            (tw, th), base = cv2.getTextSize(poly.name, font, 0.5, 1)
            nx, ny = (round(v) for v in poly.name_at)
            nx = min(max(nx, 0), image.shape[1] - tw - 6)
            ny = min(max(ny, th + base + 6), image.shape[0])
            cv2.rectangle(image, (nx, ny - th - base - 6), (nx + tw + 6, ny), _bgr(poly.color),
                          cv2.FILLED)
            cv2.putText(image, poly.name, (nx + 3, ny - base - 3), font, 0.5, _bgr(WHITE), 1,
                        cv2.LINE_AA)
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


def draw_panel(image: npt.NDArray[np.uint8], panel: Panel, size: tuple[int, int]) -> None:
    """The strip below the picture of a pane of ``size`` (the image is ``STRIP_HEIGHT``
    taller), and the alarm border round the picture."""
    w, h = size
    cv2.rectangle(image, (0, h), (w, h + STRIP_HEIGHT),
                  _bgr(ALARM_RED if panel.alarm else STRIP_BG), cv2.FILLED)
    if panel.alarm:
        half = BORDER_PX // 2
        cv2.rectangle(image, (half, half), (w - half - 1, h - half - 1), _bgr(ALARM_RED),
                      BORDER_PX)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    cv2.circle(image, (12, h + 14), 7, _bgr(panel.dot), cv2.FILLED, cv2.LINE_AA)
    for row, line in enumerate(panel.lines):
        x = 26 if row == 0 else 8
        y = round(h + 6 + LINE_HEIGHT * (row + 1) - 5)
        for segment in line:
            cv2.putText(image, segment.text, (x, y), font, scale, _bgr(segment.color), 1,
                        cv2.LINE_AA)
            x += cv2.getTextSize(segment.text, font, scale, 1)[0][0]


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


def annotated_pane(result: FrameResult, mask: float | None, status: RunStatus | None = None
                   ) -> npt.NDArray[np.uint8]:
    """A pane as it is seen away from the window (recording, snapshots, web view), as the
    window shows it: the frame, its overlay (with the zones it was checked against), and
    under it the camera's strip with the wall-clock time of capture, so a picture can be
    matched to an incident, and the counts and alarms of the run at ``status``."""
    w, h = result.out_size
    pane = np.zeros((h + STRIP_HEIGHT, w, 3), np.uint8)
    pane[:h] = render_pane(result, build_overlay(result, mask))
    people = [o for o in result.objects if isinstance(o, PersonObject)]
    draw_panel(pane, build_panel(status, result.stream, result.frame.wall, people=people),
               (w, h))
    return pane


def unseen(pane: npt.NDArray[np.uint8], height: int, title: str, reason: str) -> None:
    """The picture of a camera that cannot see, away from the window: its last frame
    dimmed, with what (``CANNOT SEE``, ``PAUSED``) and why across it, so nobody takes an
    old picture for the floor now."""
    picture = pane[:height]
    picture //= 3
    h, w = picture.shape[:2]
    scale = max(0.4, min(1.2, w / 900))
    for i, text in enumerate((title, reason[:70])):
        size = scale * (1.6 if i == 0 else 0.8)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, 2)
        at = (max(4, (w - tw) // 2), h // 2 + (i * 2 - 1) * int(th * 1.2))
        cv2.putText(picture, text, at, cv2.FONT_HERSHEY_SIMPLEX, size, (60, 60, 255), 2,
                    cv2.LINE_AA)
