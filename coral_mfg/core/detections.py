"""Typed detection results passed between stages: numpy columns, never tuples."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from coral_mfg.core.geometry import Rect, to_rect

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]
Boxes = npt.NDArray[np.floating]


@dataclass(frozen=True, eq=False)
class Detections:
    """N boxes as columns: ``xyxy`` in pixels of ``frame_size``, scores and class ids."""

    xyxy: FloatArray  # (N, 4) x1, y1, x2, y2
    scores: FloatArray  # (N,)
    class_ids: IntArray  # (N,)
    frame_size: tuple[int, int]  # (width, height) the boxes are in

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.xyxy.shape != (n, 4) or self.class_ids.shape != (n,):
            raise ValueError(
                f"inconsistent detection columns: {self.xyxy.shape}, {self.scores.shape}, "
                f"{self.class_ids.shape}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, mask: npt.NDArray[np.bool_]) -> Detections:
        return Detections(self.xyxy[mask], self.scores[mask], self.class_ids[mask], self.frame_size)

    def of_class(self, class_id: int, min_score: float) -> Detections:
        """Boxes of one class scoring strictly above ``min_score``, as the original demo does."""
        return self.select((self.class_ids == class_id) & (self.scores > min_score))

    def of_classes(self, class_ids: Iterable[int], min_score: float) -> Detections:
        """Boxes of any of these classes scoring strictly above ``min_score``."""
        wanted = np.fromiter(class_ids, dtype=np.int32)
        # a broadcast compare: np.isin's set machinery costs more than these few boxes
        mine = (self.class_ids[:, None] == wanted[None, :]).any(axis=1)
        return self.select(mine & (self.scores > min_score))

    def deduplicated(self, iou: float, inside: float, by_class: bool = True) -> Detections:
        """One box per object: overlapping or nested boxes of one class (or, ``by_class``
        False, of any class: one object the detector could not name) keep the best score."""
        if len(self) < 2:
            return self
        if not by_class or (self.class_ids == self.class_ids[0]).all():  # one group
            return self.select(duplicates(self.xyxy, self.scores, iou, inside))
        keep = np.zeros(len(self), dtype=bool)
        for class_id in np.unique(self.class_ids):
            mine = np.flatnonzero(self.class_ids == class_id)
            keep[mine] = duplicates(self.xyxy[mine], self.scores[mine], iou, inside)
        return self.select(keep)

    def placed(self, picture: Rect, out_size: tuple[int, int]) -> Detections:
        """The same boxes in pixels of an output frame whose ``picture`` rect shows this one."""
        w, h = self.frame_size
        rel = np.asarray(self.xyxy, np.float64) / np.array([w, h, w, h], np.float64)
        return Detections(to_rect(rel, picture).astype(np.float32), self.scores, self.class_ids,
                          out_size)


def pixel_boxes(xyxy: npt.NDArray[np.floating], size: tuple[int, int]) -> npt.NDArray[np.int32]:
    """Integer pixel boxes inside the frame: exactly what is drawn, logged and tested."""
    w, h = size
    boxes: npt.NDArray[np.int32] = np.rint(xyxy).astype(np.int32).reshape(-1, 4)
    # ufuncs in place: np.clip and fancy-indexed columns cost more than the few boxes
    np.maximum(boxes, 0, out=boxes)
    return np.minimum(boxes, np.array([w, h, w, h], np.int32), out=boxes)


def as_box(b: npt.NDArray[np.integer]) -> tuple[int, int, int, int]:
    return (int(b[0]), int(b[1]), int(b[2]), int(b[3]))


def iou_matrix(a: Boxes, b: Boxes) -> npt.NDArray[np.float64]:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4), as x1, y1, x2, y2."""
    inter, area_a, area_b = _overlaps(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _overlaps(
    a: Boxes, b: Boxes
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Pairwise intersection areas, and each box's own area."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2])
                    - np.maximum(a[:, None, 0], b[None, :, 0]), 0.0)
    ih = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3])
                    - np.maximum(a[:, None, 1], b[None, :, 1]), 0.0)
    return iw * ih, _areas(a), _areas(b)


def _areas(boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each box's area; an inverted box has none."""
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)


def duplicates(
    boxes: Boxes, scores: npt.NDArray[np.floating], iou: float, inside: float
) -> npt.NDArray[np.bool_]:
    """Which boxes to keep: one per object, the highest score.

    A box is the same object as a higher-scoring one when they overlap by more
    than ``iou``, or when it lies mostly (``inside``) within it or around it.
    """
    n = len(scores)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    inter, area, _ = _overlaps(boxes, boxes)
    # inter / union > iou without dividing: an empty union (or smaller box) has no
    # intersection either, and is never the same object
    same = inter > iou * (area[:, None] + area[None, :] - inter)
    same |= inter > inside * np.minimum(area[:, None], area[None, :])
    keep[:] = False
    suppressed = np.zeros(n, dtype=bool)
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if not suppressed[i]:
            keep[i] = True
            suppressed |= same[i]
    return keep
