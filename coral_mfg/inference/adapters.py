"""Stateless functions over a TFLite interpreter: fill its input, read its outputs.

All knowledge of how a detector lays out its output tensors lives in
:class:`DetectionLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.core.detections import Detections
from coral_mfg.inference.model_file import ModelInfo

Image = npt.NDArray[np.uint8]


def input_details(interpreter: Any) -> dict[str, Any]:
    return interpreter.get_input_details()[0]  # type: ignore[no-any-return]


def input_size(interpreter: Any) -> tuple[int, int]:
    """(width, height) of the model's image input."""
    _, h, w, _ = input_details(interpreter)["shape"]
    return int(w), int(h)


def write_rgb(interpreter: Any, rgb: Image) -> None:
    """Copy an RGB image of the input's size into the input tensor, in its own type.

    uint8 models take the pixels as they are, int8 models shifted by 128, float
    models scaled to [-1, 1].
    """
    details = input_details(interpreter)
    tensor = interpreter.tensor(details["index"])()[0]
    dtype = details["dtype"]
    if dtype == np.uint8:
        np.copyto(tensor, rgb)
    elif dtype == np.int8:
        np.subtract(rgb, 128, out=tensor, dtype=np.int16, casting="unsafe")
    else:
        np.multiply(rgb, 1.0 / 127.5, out=tensor, casting="unsafe")
        tensor -= 1.0
    del tensor  # the runtime refuses to invoke while a view is held


def resize_rgb(bgr: Image, dst: Image) -> None:
    """Resize a BGR image into ``dst`` (its size) as RGB: the only copy made."""
    h, w = dst.shape[:2]
    small = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=dst)


@dataclass(frozen=True)
class DetectionLayout:
    """Tensor index of each output of the SSD post-processing operator.

    ``TFLite_Detection_PostProcess`` always emits boxes, classes, scores and
    count, in that order; exports differ only in how they name and sort the
    graph's outputs (TF2 puts scores before classes), so the layout is read
    from the operator itself, never from names.
    """

    boxes: int
    classes: int
    scores: int
    count: int

    @classmethod
    def of(cls, info: ModelInfo) -> DetectionLayout:
        if len(info.postprocess_outputs) != 4:
            raise ValueError(f"{info.path} has no TFLite_Detection_PostProcess operator with "
                             "4 outputs")
        return cls(*info.postprocess_outputs)


#: Columns of ``ymin, xmin, ymax, xmax`` in ``x1, y1, x2, y2`` order (an array: a list
#: would be converted on every frame).
_XYXY = np.array([1, 0, 3, 2], np.intp)


def to_pixels(
    boxes_yxyx: npt.NDArray[np.float32], frame_size: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """Normalized ``ymin, xmin, ymax, xmax`` to clamped pixel ``x1, y1, x2, y2``."""
    w, h = frame_size
    xyxy = np.asarray(boxes_yxyx, np.float32)[:, _XYXY]  # a copy: clamped in place
    np.minimum(np.maximum(xyxy, 0.0, out=xyxy), 1.0, out=xyxy)
    return np.multiply(xyxy, np.array([w, h, w, h], np.float32), out=xyxy)


@dataclass(frozen=True, eq=False)
class RawDetections:
    """The detector's outputs as it gave them: normalized y1, x1, y2, x2 boxes."""

    boxes: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int32]
    scores: npt.NDArray[np.float32]

    def in_pixels(self, frame_size: tuple[int, int]) -> Detections:
        return Detections(to_pixels(self.boxes, frame_size), self.scores, self.classes,
                          frame_size)


def raw_detections(interpreter: Any, layout: DetectionLayout) -> RawDetections:
    """The valid detections of the last invoke (``count`` of them)."""
    scores = interpreter.get_tensor(layout.scores)[0]
    count = min(int(interpreter.get_tensor(layout.count).reshape(-1)[0]), len(scores))
    return RawDetections(
        interpreter.get_tensor(layout.boxes)[0][:count].astype(np.float32),
        interpreter.get_tensor(layout.classes)[0][:count].astype(np.int32),
        scores[:count].astype(np.float32),
    )


def class_scores(interpreter: Any) -> npt.NDArray[np.float32]:
    """The classifier's scores, dequantized when the output is integer."""
    details = interpreter.get_output_details()[0]
    raw = interpreter.get_tensor(details["index"]).reshape(-1)
    if np.issubdtype(raw.dtype, np.integer):
        scale, zero_point = details["quantization"]
        if scale:
            raw = (raw.astype(np.float32) - zero_point) * scale
    return np.asarray(raw, dtype=np.float32)
