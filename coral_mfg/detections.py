"""Typed detection results passed between stages: numpy columns, never tuples."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from coral_mfg.geometry import Rect, to_rect

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]


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
        return self.select(np.isin(self.class_ids, wanted) & (self.scores > min_score))

    def deduplicated(self, iou: float, inside: float, by_class: bool = True) -> Detections:
        """One box per object: overlapping or nested boxes of one class (or, ``by_class``
        False, of any class: one object the detector could not name) keep the best score."""
        from coral_mfg.tracking import duplicates

        keep = np.zeros(len(self), dtype=bool)
        groups = self.class_ids if by_class else np.zeros_like(self.class_ids)
        for class_id in np.unique(groups):
            mine = np.flatnonzero(groups == class_id)
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
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    return boxes


def as_box(b: npt.NDArray[np.integer]) -> tuple[int, int, int, int]:
    return (int(b[0]), int(b[1]), int(b[2]), int(b[3]))
