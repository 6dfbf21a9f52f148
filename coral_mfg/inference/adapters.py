"""Stateless functions over a TFLite interpreter: fill its input, read its outputs.

All knowledge of how a detector lays out its output tensors lives in
:func:`detection_layout`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.detections import Detections

Image = npt.NDArray[np.uint8]


def input_details(interpreter: Any) -> dict[str, Any]:
    return interpreter.get_input_details()[0]  # type: ignore[no-any-return]


def input_size(interpreter: Any) -> tuple[int, int]:
    """(width, height) of the model's image input."""
    _, h, w, _ = input_details(interpreter)["shape"]
    return int(w), int(h)


def set_image(interpreter: Any, bgr: Image, roi: Sequence[int] | None = None) -> None:
    """Resize (a region of) a BGR frame straight into the input tensor as RGB.

    ``roi`` is ``x1, y1, x2, y2`` in pixels of ``bgr``; the crop is a view, so
    the only copy made is the small resized image.
    """
    if roi is not None:
        x1, y1, x2, y2 = roi
        bgr = bgr[y1:y2, x1:x2]
    details = input_details(interpreter)
    w, h = input_size(interpreter)
    small = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    tensor = interpreter.tensor(details["index"])()[0]
    dtype = details["dtype"]
    if dtype == np.uint8:
        cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=tensor)
    elif dtype == np.int8:
        rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        np.subtract(rgb, 128, out=tensor, dtype=np.int16, casting="unsafe")
    else:  # float models take [-1, 1]
        rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        np.multiply(rgb, 1.0 / 127.5, out=tensor, casting="unsafe")
        tensor -= 1.0
    del tensor  # the runtime refuses to invoke while a view is held


@dataclass(frozen=True)
class DetectionLayout:
    """Output tensor index of each SSD post-processing output."""

    boxes: int
    classes: int
    scores: int
    count: int


def detection_layout(
    outputs: Sequence[Mapping[str, Any]], signature_outputs: Mapping[str, int] | None = None
) -> DetectionLayout:
    """Identify boxes, classes, scores and count of ``TFLite_Detection_PostProcess``.

    TF1 and TF2 exports emit them in different orders, so use, in turn: the
    signature's output names; the shapes (boxes are ``[1, N, 4]``, count is
    ``[1]``); the TF1 tensor-name suffixes ``:1`` (classes) and ``:2`` (scores);
    and only then TF2's order, where scores come before classes.
    """
    if len(outputs) != 4:
        raise ValueError(f"an SSD detector has 4 outputs, this model has {len(outputs)}")
    if signature_outputs:
        named = _by_signature(signature_outputs)
        if named is not None:
            return named
    boxes = [o["index"] for o in outputs if len(o["shape"]) == 3 and o["shape"][-1] == 4]
    counts = [o["index"] for o in outputs if int(np.prod(o["shape"])) == 1]
    rest = [o for o in outputs if o["index"] not in boxes + counts]
    if len(boxes) != 1 or len(counts) != 1 or len(rest) != 2:
        raise ValueError(
            "outputs are not boxes [1,N,4], classes [1,N], scores [1,N] and count [1]: "
            + ", ".join(f"{o['name']}{list(o['shape'])}" for o in outputs)
        )
    suffix = {str(o["name"]).rsplit(":", 1)[-1]: o["index"] for o in rest if ":" in str(o["name"])}
    if "1" in suffix and "2" in suffix:
        classes, scores = suffix["1"], suffix["2"]
    else:
        first, second = sorted(rest, key=lambda o: int(o["index"]))
        scores, classes = first["index"], second["index"]
    return DetectionLayout(boxes[0], classes, scores, counts[0])


def _by_signature(sig: Mapping[str, int]) -> DetectionLayout | None:
    found: dict[str, int] = {}
    for name, index in sig.items():
        key = name.lower()
        for role, words in (
            ("boxes", ("box",)),
            ("classes", ("class",)),
            ("scores", ("score",)),
            ("count", ("num", "count")),
        ):
            if any(w in key for w in words):
                found[role] = index
    if len(found) != 4:
        return None
    return DetectionLayout(**found)


def layout_of(interpreter: Any) -> DetectionLayout:
    """The layout of a live interpreter (read once per model, then reused)."""
    signature_outputs: Mapping[str, int] | None = None
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        key = next(iter(signatures))
        runner_outputs = interpreter._get_full_signature_list()[key]["outputs"]
        signature_outputs = dict(runner_outputs)
    return detection_layout(interpreter.get_output_details(), signature_outputs)


def to_pixels(
    boxes_yxyx: npt.NDArray[np.float32], frame_size: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """Normalized ``ymin, xmin, ymax, xmax`` to clamped pixel ``x1, y1, x2, y2``."""
    w, h = frame_size
    clipped = np.clip(boxes_yxyx, 0.0, 1.0)
    scale = np.array([w, h, w, h], np.float32)
    return (clipped[:, [1, 0, 3, 2]] * scale).astype(np.float32)


def get_detections(
    interpreter: Any, layout: DetectionLayout, frame_size: tuple[int, int]
) -> Detections:
    """Detections of the last invoke, in pixels of ``frame_size``."""
    scores = interpreter.get_tensor(layout.scores)[0]
    count = min(int(interpreter.get_tensor(layout.count).reshape(-1)[0]), len(scores))
    scores = scores[:count].astype(np.float32)
    classes = interpreter.get_tensor(layout.classes)[0][:count].astype(np.int32)
    boxes = interpreter.get_tensor(layout.boxes)[0][:count].astype(np.float32)
    return Detections(to_pixels(boxes, frame_size), scores, classes, frame_size)


def class_scores(interpreter: Any) -> npt.NDArray[np.float32]:
    """The classifier's scores, dequantized when the output is integer."""
    details = interpreter.get_output_details()[0]
    raw = interpreter.get_tensor(details["index"]).reshape(-1)
    if np.issubdtype(raw.dtype, np.integer):
        scale, zero_point = details["quantization"]
        if scale:
            raw = (raw.astype(np.float32) - zero_point) * scale
    return np.asarray(raw, dtype=np.float32)
