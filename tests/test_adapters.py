"""Adapters on real models and real frames, plus layout and pixel-mapping tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import flatbuffers
import numpy as np
import pytest

from coral_mfg.core.detections import Detections
from coral_mfg.core.geometry import letterbox
from coral_mfg.inference import adapters
from coral_mfg.inference.model_file import inspect_model
from coral_mfg.inference.runtime import runtime_backend
from tests.conftest import frames, image, iou, model

DETECTOR = "ssd_mobilenet_v1_coco_quant_detect.tflite"
PERSON, APPLE = 0, 52



def _set_image(interpreter: Any, bgr: np.ndarray, roi: Sequence[int] | None = None) -> None:
    """Resize (a region of) a BGR frame into the input tensor as RGB, as the lanes do."""
    if roi is not None:
        x1, y1, x2, y2 = roi
        bgr = bgr[y1:y2, x1:x2]
    w, h = adapters.input_size(interpreter)
    rgb = np.empty((h, w, 3), np.uint8)
    adapters.resize_rgb(bgr, rgb)
    adapters.write_rgb(interpreter, rgb)


def _get_detections(interpreter: Any, layout: adapters.DetectionLayout,
                    frame_size: tuple[int, int]) -> Detections:
    return adapters.raw_detections(interpreter, layout).in_pixels(frame_size)

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


def _layout() -> adapters.DetectionLayout:
    return adapters.DetectionLayout.of(inspect_model(model(DETECTOR)))


def _detect(interp: Any, frame: np.ndarray, class_id: int, min_score: float) -> np.ndarray:
    _set_image(interp, frame)
    interp.invoke()
    h, w = frame.shape[:2]
    dets = _get_detections(interp, _layout(), (w, h))
    return dets.of_class(class_id, min_score).xyxy


def _postprocess_model(path: Path, op_outputs: list[int], graph_outputs: list[int]) -> Path:
    """A minimal .tflite whose only operator is SSD post-processing (never run, only read).

    Tensor 1..4 are named as TF2 exports name them; ``op_outputs`` says which the
    operator writes as boxes, classes, scores and count.
    """
    from ai_edge_litert import schema_py_generated as schema

    names = ["input", "StatefulPartitionedCall:1", "StatefulPartitionedCall:2",
             "StatefulPartitionedCall:0", "StatefulPartitionedCall:3"]
    shapes = [[1, 8, 8, 3], [1, 10], [1, 10], [1], [1, 10, 4]]
    tensors = []
    for name, shape in zip(names, shapes, strict=True):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, 0, 0
        tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], op_outputs
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = tensors, [0], graph_outputs, [op]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = 32  # CUSTOM
    code.customCode = "TFLite_Detection_PostProcess"
    model = schema.ModelT()
    model.version, model.subgraphs, model.operatorCodes = 3, [graph], [code]
    model.buffers = [schema.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def test_tf1_detector_layout_from_its_operator() -> None:
    info = inspect_model(model(DETECTOR))
    layout = adapters.DetectionLayout.of(info)
    assert layout == adapters.DetectionLayout(boxes=167, classes=168, scores=169, count=170)


@pytest.mark.parametrize(
    ("op_outputs", "graph_outputs", "expected"),
    [
        # TF2: ':1' is scores and ':2' is classes; names would swap them, the operator does not
        ([4, 2, 1, 3], [1, 4, 3, 2], adapters.DetectionLayout(boxes=4, classes=2, scores=1,
                                                             count=3)),
        # the same tensors listed in another graph order: the layout does not move
        ([4, 2, 1, 3], [3, 2, 1, 4], adapters.DetectionLayout(boxes=4, classes=2, scores=1,
                                                             count=3)),
        # an export whose operator writes the TF1-named tensors: whatever the names say
        ([4, 1, 2, 3], [4, 1, 2, 3], adapters.DetectionLayout(boxes=4, classes=1, scores=2,
                                                             count=3)),
    ],
    ids=["tf2-export", "tf2-reordered-outputs", "tf1-style"],
)
def test_detector_layout_comes_from_the_postprocess_operator(
    tmp_path: Path, op_outputs: list[int], graph_outputs: list[int],
    expected: adapters.DetectionLayout,
) -> None:
    info = inspect_model(_postprocess_model(tmp_path / "det.tflite", op_outputs, graph_outputs))
    assert info.is_detector
    assert adapters.DetectionLayout.of(info) == expected


def test_a_model_without_postprocessing_has_no_layout() -> None:
    with pytest.raises(ValueError, match="no TFLite_Detection_PostProcess"):
        adapters.DetectionLayout.of(inspect_model(model("classifier.tflite")))


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
    _set_image(detector, frame)
    detector.invoke()
    layout = _layout()
    src = _get_detections(detector, layout, (724, 400))
    out = _get_detections(detector, layout, (960, 540))
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
    _set_image(classifier, frames("apple-conveyor.mp4")[index], box)
    classifier.invoke()
    scores = adapters.class_scores(classifier)
    assert int(np.argmax(scores)) == grade
    assert float(scores.max()) > 0.8
    assert scores.dtype == np.float32
    assert 0.9 <= float(scores.sum()) <= 1.01  # dequantized softmax, scale 1/256
