"""Write coral_mfg/data/known_answer_crop.jpg: one apple from the sample conveyor video.

The Edge TPU probe runs this crop through the classifier's CPU build and its
Edge TPU build and compares the scores (see coral_mfg/inference/worker.py). The
crop is cut by the project's own detector from videos/apple-conveyor.mp4
(Apache-2.0, google-coral/demo-manufacturing), the apple the CPU classifier is
surest of, at the classifier's input size. Run from the source checkout after
'coral-mfg fetch-assets': .venv/bin/python scripts/make_known_answer_crop.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from coral_mfg.config.assets import app_home
from coral_mfg.inference import adapters
from coral_mfg.inference.model_file import inspect_model

APPLE = 52  # COCO
OUT = Path(__file__).resolve().parents[1] / "coral_mfg" / "data" / "known_answer_crop.jpg"
FRAMES = 120


def main() -> int:
    home = app_home()
    det_path = home / "models" / "ssd_mobilenet_v1_coco_quant_detect.tflite"
    clf_path = home / "models" / "classifier.tflite"
    det = Interpreter(model_path=str(det_path))
    det.allocate_tensors()
    clf = Interpreter(model_path=str(clf_path))
    clf.allocate_tensors()
    layout = adapters.DetectionLayout.of(inspect_model(det_path))
    size = adapters.input_size(clf)
    cap = cv2.VideoCapture(str(home / "videos" / "apple-conveyor.mp4"))
    best: tuple[float, np.ndarray] | None = None
    for _ in range(FRAMES):
        ok, frame = cap.read()
        if not ok:
            break
        adapters.set_image(det, frame)
        det.invoke()
        found = adapters.get_detections(det, layout, (frame.shape[1], frame.shape[0]))
        for box, cls, score in zip(found.xyxy, found.class_ids, found.scores, strict=True):
            if cls != APPLE or score < 0.5:
                continue
            x1, y1, x2, y2 = (int(v) for v in box)
            if x2 - x1 < 32 or y2 - y1 < 32:
                continue
            crop = cv2.resize(frame[y1:y2, x1:x2], size, interpolation=cv2.INTER_AREA)
            adapters.set_image(clf, crop)
            clf.invoke()
            top = float(adapters.class_scores(clf).max())
            if best is None or top > best[0]:
                best = (top, crop)
    cap.release()
    if best is None:
        print("no apple found in the first frames", file=sys.stderr)
        return 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(OUT), best[1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes), top score {best[0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
