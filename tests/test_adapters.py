"""Adapters on real models and real frames, plus layout and pixel-mapping tables."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from coral_mfg.geometry import letterbox
from coral_mfg.inference import adapters
from coral_mfg.inference.runtime import runtime_backend
from tests.conftest import frames, image, iou, model

DETECTOR = "ssd_mobilenet_v1_coco_quant_detect.tflite"
PERSON, APPLE = 0, 52


def _interpreter(name: str) -> Any:
    interp = runtime_backend().interpreter(model_path=str(model(name)), num_threads=2)
    interp.allocate_tensors()
    return interp


@pytest.fixture(scope="module")
def detector() -> Any:
    return _interpreter(DETECTOR)


@pytest.fixture(scope="module")
def classifier() -> Any:
    return _interpreter("classifier.tflite")


def _detect(interp: Any, frame: np.ndarray, class_id: int, min_score: float) -> np.ndarray:
    adapters.set_image(interp, frame)
    interp.invoke()
    h, w = frame.shape[:2]
    dets = adapters.get_detections(interp, adapters.layout_of(interp), (w, h))
    return dets.of_class(class_id, min_score).xyxy


def _out(index: int, name: str, shape: list[int]) -> dict[str, Any]:
    return {"index": index, "name": name, "shape": np.array(shape)}


@pytest.mark.parametrize(
    ("outputs", "signature", "expected"),
    [
        pytest.param(
            [
                _out(167, "TFLite_Detection_PostProcess", [1, 10, 4]),
                _out(168, "TFLite_Detection_PostProcess:1", [1, 10]),
                _out(169, "TFLite_Detection_PostProcess:2", [1, 10]),
                _out(170, "TFLite_Detection_PostProcess:3", [1]),
            ],
            None,
            adapters.DetectionLayout(boxes=167, classes=168, scores=169, count=170),
            id="tf1-order",
        ),
        pytest.param(
            [
                _out(600, "StatefulPartitionedCall:1", [1, 25]),
                _out(598, "StatefulPartitionedCall:3", [1, 25, 4]),
                _out(601, "StatefulPartitionedCall:0", [1]),
                _out(599, "StatefulPartitionedCall:2", [1, 25]),
            ],
            {"output_0": 601, "output_1": 600, "output_2": 599, "output_3": 598},
            # No names in the signature: shapes find boxes and count; the TF1
            # suffixes are absent, so TF2's order (scores first) decides.
            adapters.DetectionLayout(boxes=598, classes=600, scores=599, count=601),
            id="tf2-by-shape",
        ),
        pytest.param(
            [
                _out(10, "a", [1, 25]),
                _out(11, "b", [1, 25, 4]),
                _out(12, "c", [1]),
                _out(13, "d", [1, 25]),
            ],
            {"detection_scores": 13, "detection_boxes": 11, "num_detections": 12,
             "detection_classes": 10},
            adapters.DetectionLayout(boxes=11, classes=10, scores=13, count=12),
            id="signature-names",
        ),
        pytest.param(
            [
                _out(3, "x:2", [1, 100]),
                _out(0, "x", [1, 100, 4]),
                _out(1, "x:1", [1, 100]),
                _out(2, "x:3", [1]),
            ],
            None,
            adapters.DetectionLayout(boxes=0, classes=1, scores=3, count=2),
            id="tf1-shuffled-details",
        ),
    ],
)
def test_detection_layout(
    outputs: list[dict[str, Any]], signature: dict[str, int] | None,
    expected: adapters.DetectionLayout,
) -> None:
    assert adapters.detection_layout(outputs, signature) == expected


@pytest.mark.parametrize(
    "outputs",
    [
        [_out(0, "x", [1, 10, 4])],
        [_out(0, "a", [1, 10]), _out(1, "b", [1, 10]), _out(2, "c", [1, 10]), _out(3, "d", [1])],
    ],
    ids=["one-output", "no-boxes"],
)
def test_detection_layout_rejects(outputs: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="outputs"):
        adapters.detection_layout(outputs)


@pytest.mark.parametrize(
    ("yxyx", "size", "xyxy"),
    [
        ([0.0, 0.0, 1.0, 1.0], (960, 540), [0, 0, 960, 540]),
        ([0.25, 0.5, 0.75, 1.0], (960, 540), [480, 135, 960, 405]),
        ([-0.1, -0.2, 1.3, 1.1], (640, 480), [0, 0, 640, 480]),
        ([0.5, 0.5, 0.5, 0.5], (100, 50), [50, 25, 50, 25]),
        ([0.1, 0.2, 0.3, 0.4], (724, 400), [144.8, 40, 289.6, 120]),
    ],
    ids=["full", "quarter", "clamped", "degenerate", "non-square"],
)
def test_to_pixels(yxyx: list[float], size: tuple[int, int], xyxy: list[float]) -> None:
    got = adapters.to_pixels(np.array([yxyx], np.float32), size)
    np.testing.assert_allclose(got[0], xyxy, atol=1e-3)


# Boxes measured once by eye on the frames (x1, y1, x2, y2 in source pixels).
@pytest.mark.parametrize(
    ("video", "index", "class_id", "truth"),
    [
        ("worker-zone-detection.mp4", 0, PERSON, [240, 140, 340, 270]),
        ("worker-zone-detection.mp4", 4, PERSON, [205, 140, 300, 270]),
        ("apple-conveyor.mp4", 15, APPLE, [380, 0, 585, 180]),
        ("apple-conveyor.mp4", 20, APPLE, [395, 52, 682, 300]),
        ("apple-conveyor.mp4", 25, APPLE, [395, 120, 724, 400]),
        ("apple-conveyor.mp4", 60, APPLE, [377, 87, 572, 273]),
    ],
)
def test_detects_object_where_it_is(
    detector: Any, video: str, index: int, class_id: int, truth: list[int]
) -> None:
    boxes = _detect(detector, frames(video)[index], class_id, 0.4)
    assert len(boxes), f"no class {class_id} on frame {index} of {video}"
    assert max(iou(b, truth) for b in boxes) > 0.6


def test_detects_grace_hopper(detector: Any) -> None:
    bgr = cv2.imread(str(image("grace_hopper.bmp")))
    assert bgr is not None
    boxes = _detect(detector, bgr, PERSON, 0.5)
    assert max(iou(b, [0, 30, 512, 600]) for b in boxes) > 0.8


def test_boxes_map_to_any_frame_size(detector: Any) -> None:
    frame = frames("apple-conveyor.mp4")[20]
    adapters.set_image(detector, frame)
    detector.invoke()
    layout = adapters.layout_of(detector)
    src = adapters.get_detections(detector, layout, (724, 400))
    out = adapters.get_detections(detector, layout, (960, 540))
    placed = src.placed((0, 0, 960, 540), (960, 540)).xyxy
    np.testing.assert_allclose(placed, out.xyxy, rtol=1e-5, atol=1e-3)
    # letterboxed: the 724x400 picture fitted into 960x960 is 960x530, 215 px down
    boxed = src.placed(letterbox((960, 960), (724, 400)), (960, 960)).xyxy
    np.testing.assert_allclose(boxed[:, [0, 2]], out.xyxy[:, [0, 2]], atol=1e-3)
    np.testing.assert_allclose(boxed[:, [1, 3]], 215 + src.xyxy[:, [1, 3]] * 530 / 400,
                               atol=1e-3)


@pytest.mark.parametrize(
    ("index", "box", "grade"),
    [
        (20, (385, 43, 679, 301), 0),  # fresh: red, shiny
        (22, (390, 67, 716, 356), 0),
        (55, (375, 28, 517, 182), 1),  # rotten: brown bruise, visible by eye
        (60, (378, 86, 573, 267), 1),
    ],
)
def test_classifier_grades_real_crops(
    classifier: Any, index: int, box: tuple[int, int, int, int], grade: int
) -> None:
    adapters.set_image(classifier, frames("apple-conveyor.mp4")[index], box)
    classifier.invoke()
    scores = adapters.class_scores(classifier)
    assert int(np.argmax(scores)) == grade
    assert float(scores.max()) > 0.8
    assert scores.dtype == np.float32
    assert 0.9 <= float(scores.sum()) <= 1.01  # dequantized softmax, scale 1/256
