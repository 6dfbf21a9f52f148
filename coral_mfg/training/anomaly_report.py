"""What an anomaly training produced, for a plant engineer to judge it by.

``report.json`` for machines, ``report.md`` for people, ``scores.png``: the
distances of the training crops (from the final model) and of the held-out ones
(each from a model that never saw it), with the threshold. The picture is drawn
with OpenCV, which inspection already needs, so this training needs nothing
more than the station has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
SCORES_PNG = "scores.png"

WIDTH, HEIGHT = 900, 480
LEFT, RIGHT, TOP, BOTTOM = 70, 30, 60, 60
BINS = 30
#: BGR
TRAINING_COLOR = (200, 140, 40)
HELD_OUT_COLOR = (30, 140, 240)
THRESHOLD_COLOR = (40, 40, 220)
INK = (40, 40, 40)
GRID = (225, 225, 225)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def auroc(good: npt.NDArray[np.floating], bad: npt.NDArray[np.floating]) -> float:
    """The chance that a bad crop scores above a good one (ties count half): the area
    under the ROC curve, from ranks, with no threshold."""
    g = np.sort(np.asarray(good, np.float64))
    b = np.asarray(bad, np.float64)
    if not len(g) or not len(b):
        return float("nan")
    below = np.searchsorted(g, b, side="left")
    tied = np.searchsorted(g, b, side="right") - below
    return float((below + 0.5 * tied).sum() / (len(g) * len(b)))


def draw_histograms(path: Path, training: npt.NDArray[np.floating],
                    held_out: npt.NDArray[np.floating], threshold: float, *,
                    title: str) -> None:
    """Both histograms on one axis, side by side per bin, and the threshold as a line."""
    top = max(float(np.max(held_out)), float(np.max(training)), threshold) * 1.1
    edges = np.linspace(0.0, top, BINS + 1)
    counts = [np.histogram(training, edges)[0], np.histogram(held_out, edges)[0]]
    most = max(1, int(max(c.max() for c in counts)))
    step = int(next(m * 10 ** e for e in range(9) for m in (1, 2, 5) if m * 10 ** e * 4 >= most))
    tallest = int(step * -(-most // step))
    image = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP

    def x_of(value: float) -> int:
        return round(x0 + (x1 - x0) * value / top)

    def y_of(count: float) -> int:
        return round(y0 - (y0 - y1) * count / tallest)

    for count in range(0, tallest + 1, step):
        y = y_of(count)
        cv2.line(image, (x0, y), (x1, y), GRID, 1)
        _text(image, str(count), (x0 - 8, y + 5), align="right")
    for i in range(6):
        value = top * i / 5
        cv2.line(image, (x_of(value), y0), (x_of(value), y0 + 5), INK, 1)
        _text(image, f"{value:.3g}", (x_of(value), y0 + 22), align="centre")
    width = (x1 - x0) / BINS
    for b in range(BINS):
        for which, (color, c) in enumerate(zip((TRAINING_COLOR, HELD_OUT_COLOR), counts,
                                               strict=True)):
            if c[b]:
                left = round(x0 + b * width + which * width / 2)
                cv2.rectangle(image, (left + 1, y_of(int(c[b]))),
                              (round(left + width / 2) - 1, y0), color, cv2.FILLED)
    cv2.line(image, (x0, y0), (x1, y0), INK, 1)
    cv2.line(image, (x0, y0), (x0, y1), INK, 1)
    tx = x_of(threshold)
    cv2.line(image, (tx, y1 - 10), (tx, y0), THRESHOLD_COLOR, 2)
    label = f"threshold {threshold:.4g}"
    _text(image, label, (tx - 6, y1 - 2) if tx > x1 - 160 else (tx + 6, y1 - 2),
          align="right" if tx > x1 - 160 else "left", color=THRESHOLD_COLOR)
    _text(image, "distance from the good crops", ((x0 + x1) // 2, HEIGHT - 14),
          align="centre")
    _text(image, title, (x0, 28), scale=0.65)
    for i, (label, color) in enumerate((("training crops", TRAINING_COLOR),
                                        ("held-out crops", HELD_OUT_COLOR))):
        lx = x0 + (x1 - x0) // 3
        ly = y1 + 14 + 24 * i
        cv2.rectangle(image, (lx, ly - 11), (lx + 16, ly + 3), color, cv2.FILLED)
        _text(image, label, (lx + 24, ly + 2))
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    path.write_bytes(data.tobytes())


def _text(image: npt.NDArray[np.uint8], text: str, at: tuple[int, int], *,
          align: str = "left", scale: float = 0.5, color: tuple[int, int, int] = INK) -> None:
    (w, _), _ = cv2.getTextSize(text, FONT, scale, 1)
    x, y = at
    if align == "right":
        x -= w
    elif align == "centre":
        x -= w // 2
    cv2.putText(image, text, (x, y), FONT, scale, color, 1, cv2.LINE_AA)


def markdown(report: dict[str, Any]) -> str:
    """The report for people: what was learnt from, and how the threshold holds."""
    images, cal = report["images"], report["calibration"]
    held, train = report["scores"]["held_out"], report["scores"]["training"]
    lines = [
        f"# Anomaly model trained on {report['good_dir']}", "",
        f"Good crops: {images['used']} used of {images['found']} found "
        f"({images['unreadable']} unreadable, skipped; {images['duplicates']} identical "
        "pictures counted once). Embeddings by "
        f"{report['extractor']['file']}; " + _method(report), "",
        f"Threshold: distance {cal['threshold']:.4f}, the distance that at most "
        f"{cal['false_alarm_rate']:.1%} of the held-out good crops exceed. Each crop was held "
        f"out once ({cal['folds']} folds of consecutive crops) and scored by a model made "
        "without it.", "",
        f"Held-out false alarms at the threshold: {cal['held_out_false_alarms']} of "
        f"{cal['held_out']} ({cal['held_out_false_alarm_rate']:.2%}). With {cal['held_out']} "
        f"held-out crops, a rate below {cal['smallest_measurable_rate']:.2%} cannot be told "
        "from zero: with fewer crops than 1 / rate, the threshold is the largest held-out "
        "distance.", "",
        "| crops | min | median | 99th percentile | max |", "|---|---|---|---|---|",
        f"| training (final model) | {train['min']:.4f} | {train['median']:.4f} | "
        f"{train['p99']:.4f} | {train['max']:.4f} |",
        f"| held out | {held['min']:.4f} | {held['median']:.4f} | {held['p99']:.4f} | "
        f"{held['max']:.4f} |", "",
        f"Histograms: {SCORES_PNG}. Embedding took {report['seconds']['embedding']} s "
        f"({report['seconds']['per_crop_ms']} ms a crop); {report['seconds']['total']} s in "
        "all.", "",
        "Run with:", "", "```sh", report["run_command"], "```", "",
    ]
    return "\n".join(lines)


def _method(report: dict[str, Any]) -> str:
    if report["method"] == "gaussian":
        return (f"the model is {report['memory']} Gaussians (shrunk covariance), each of "
                "them without one calibration fold; a crop's distance is the mean of its "
                "Mahalanobis distances from them.")
    return (f"the model keeps {report['memory']} of them; a crop's distance is to the "
            f"nearest {report['neighbours']} kept.")


def write_report(folder: Path, report: dict[str, Any]) -> None:
    (folder / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (folder / REPORT_MD).write_text(markdown(report), encoding="utf-8")


def summary(report: dict[str, Any], out: Path) -> str:
    cal = report["calibration"]
    return "\n".join([
        f"wrote {out} ({report['method']} model of {report['images']['used']} good crops)",
        f"threshold {cal['threshold']:.4f}: {cal['held_out_false_alarms']} of "
        f"{cal['held_out']} held-out good crops above it ({cal['held_out_false_alarm_rate']:.2%};"
        f" asked for at most {cal['false_alarm_rate']:.1%})",
        f"report: {out / REPORT_MD}, histograms: {out / SCORES_PNG}",
        f"run it:\n  {report['run_command']}",
    ])
