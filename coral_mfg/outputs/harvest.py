"""Crops from the line, filed by the grade the classifier gave them: a training set.

Every crop graded on a frame is saved as ``DIR/<grade>/<name>.jpg``, the exact
pixels the classifier saw (full resolution), so an engineer can run the line,
move the wrongly graded crops to the right folder and train on the result
(``coral-mfg train-classifier DIR``). The folder is bounded: once it holds
``max_bytes`` of JPEGs (those already there count too), saving stops with one
log line. JPEGs are encoded and written on a thread of their own behind a
bounded queue, so a slow disk drops crops (counted), never frames.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.core.clock import POLL_S, file_utc
from coral_mfg.core.files import make_folder
from coral_mfg.core.names import name_part
from coral_mfg.core.results import FrameResult, InspectedObject
from coral_mfg.outputs.base import SinkBase
from coral_mfg.outputs.health import OutputHealth, os_reason
from coral_mfg.outputs.retention import file_size

log = logging.getLogger(__name__)

JPEG_QUALITY = 95  # training material: little loss
QUEUE_SIZE = 256


@dataclass(frozen=True, eq=False)
class Crop:
    """One graded crop on its way to the disk."""

    grade: str
    name: str
    pixels: npt.NDArray[np.uint8]


def folder_name(grade: str) -> str:
    """A grade as a folder name (the one encoding of names in paths)."""
    return name_part(grade)


def crop_name(result: FrameResult, obj: InspectedObject) -> str:
    """``visual_inspection_20261128T101500.250Z_f000123_t7_apple``: stream, time (UTC),
    frame, track and label, so a crop can be found again on the recording."""
    return (f"{name_part(result.stream)}_{file_utc(result.frame.wall, millis=True)}_"
            f"f{result.frame.index:06d}_t{obj.track}_{name_part(obj.label)}")


def jpeg_bytes(folder: Path) -> int:
    """What the JPEGs under ``folder`` take, so a resumed harvest keeps to its bound."""
    return sum(file_size(p) for p in folder.rglob("*.jpg"))


class Harvester(SinkBase):
    """Saves graded crops; see the module's docstring."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        make_folder(folder, "harvest folder", "--harvest_dir")
        self.folder = folder
        self.max_bytes = max_bytes
        self.used = jpeg_bytes(folder)
        self.health = OutputHealth("harvest")
        self.full_skipped = 0
        self._full_logged = False
        self._queue: queue.Queue[Crop] = queue.Queue(QUEUE_SIZE)
        self._done = threading.Event()
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="harvest", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("harvesting graded crops into %s (%.0f of %.0f MB used)", self.folder,
                 self.used / 2**20, self.max_bytes / 2**20)

    def write(self, result: FrameResult) -> None:
        for obj in result.objects:
            if not isinstance(obj, InspectedObject) or obj.frame_grade is None or not obj.crop:
                continue
            x1, y1, x2, y2 = obj.crop
            crop = Crop(obj.frame_grade, crop_name(result, obj),
                        result.frame.image[y1:y2, x1:x2].copy())
            try:
                self._queue.put_nowait(crop)
            except queue.Full:
                self.health.drop()

    def _run(self) -> None:
        while not self._abandon.is_set():
            try:
                crop = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                if self._done.is_set():
                    return
                continue
            self._save(crop)

    def _save(self, crop: Crop) -> None:
        if self.used >= self.max_bytes:
            self._full()
            return
        folder = self.folder / folder_name(crop.grade)
        if not self.health.may_write(self.folder):
            return
        ok, data = cv2.imencode(".jpg", crop.pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        try:
            if not ok:
                raise OSError(f"JPEG encoding failed for {crop.name}")
            folder.mkdir(exist_ok=True)
            (folder / f"{crop.name}.jpg").write_bytes(data.tobytes())
        except OSError as exc:
            self.health.failed(os_reason(exc))
            return
        self.used += len(data)
        self.health.wrote()

    def _full(self) -> None:
        self.full_skipped += 1
        if not self._full_logged:
            self._full_logged = True
            log.warning("harvest folder %s holds %.0f MB, its limit: no more crops are saved; "
                        "sort and move them, or raise --harvest_max_mb", self.folder,
                        self.used / 2**20)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``), then stop; what is left is counted."""
        self._done.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        self._abandon.set()
        left = self._queue.qsize()
        if left:
            self.health.drop(left)

    def counts(self) -> dict[str, Any]:
        return {**self.health.counts(), "full_skipped": self.full_skipped,
                "megabytes": round(self.used / 2**20, 1)}
