"""Recordings of the annotated cameras: each camera on its own, or all of them tiled.

Each pane carries its camera's name and the wall-clock time it was captured
(:func:`~coral_mfg.outputs.overlay.annotated_pane`). Panes are made on the
output thread; encoding happens on each :class:`H264Writer`'s own thread.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.core.files import make_folder
from coral_mfg.core.geometry import grid_cells, grid_shape
from coral_mfg.core.results import FrameResult
from coral_mfg.core.status import RunStatus
from coral_mfg.outputs.base import SinkBase
from coral_mfg.outputs.encoder import H264Writer, RecordTarget
from coral_mfg.outputs.health import OutputHealth
from coral_mfg.outputs.overlay import annotated_pane
from coral_mfg.outputs.panel import STRIP_HEIGHT

#: How long one pane waits for another camera's next frame before that camera's last
#: frame is repeated (a stalled or lost source must not hold the recording), and how
#: many frames may wait at most (memory).
PANE_WAIT_S = 2.0
MAX_PANE_BACKLOG = 120
FINISH_S = 10.0


class Recorder(SinkBase):
    """A recording sink: its writer, and the camera it records (None: all, tiled). Each
    pane carries its camera's strip, with the run's counts as the last status gave them."""

    camera: str | None
    writer: H264Writer
    latest: RunStatus | None = None

    def start(self) -> None:
        self.writer.start()

    def status(self, status: RunStatus) -> None:
        self.latest = status

    @property
    def health(self) -> OutputHealth:
        return self.writer.health

    def counts(self) -> dict[str, Any]:
        return self.writer.counts()


class CameraRecorder(Recorder):
    """One camera's annotated frames, in order, at its own pace."""

    def __init__(self, target: RecordTarget, camera: str, size: tuple[int, int], fps: float,
                 mask: float | None, *, lossless: bool) -> None:
        _make_folder(target)
        self.camera = camera
        self.mask = mask
        w, h = size
        self.writer = H264Writer(target, (w, h + STRIP_HEIGHT), fps, lossless=lossless,
                                 name=f"recording {camera}")

    def write(self, result: FrameResult) -> None:
        if result.stream == self.camera:
            self.writer.submit(annotated_pane(result, self.mask, self.latest))

    def close(self) -> None:
        self.writer.finish(FINISH_S)


class TiledRecorder(Recorder):
    """Every camera's annotated pane in one picture: side by side for two, else a grid.

    The k-th processed frame of each camera share the k-th recorded frame; a
    camera that has ended (or fallen far behind) repeats its last pane.
    """

    def __init__(self, target: RecordTarget, cameras: tuple[str, ...], size: tuple[int, int],
                 fps: float, mask: float | None, *, lossless: bool) -> None:
        _make_folder(target)
        self.camera = None
        self.cameras = cameras
        self.mask = mask
        w, h = size[0], size[1] + STRIP_HEIGHT
        cols, rows = grid_shape(len(cameras))
        # up to two across, panes keep their size; a larger grid fits twice a pane's size
        area = (w * cols, h * rows) if cols <= 2 else (2 * w, 2 * h)
        self.cells = grid_cells(len(cameras), area)
        _, _, cw, ch = self.cells[0]
        self.canvas = np.zeros((ch * rows, cw * cols, 3), np.uint8)
        self.writer = H264Writer(target, (cw * cols, ch * rows), fps, lossless=lossless)
        self.pending: dict[str, deque[npt.NDArray[np.uint8]]] = {c: deque() for c in cameras}
        self.ended: set[str] = set()
        self.last_seen = {c: time.monotonic() for c in cameras}

    def write(self, result: FrameResult) -> None:
        if result.stream not in self.pending:
            return
        self.pending[result.stream].append(
            self._fit(annotated_pane(result, self.mask, self.latest)))
        self.last_seen[result.stream] = time.monotonic()
        self._drain()

    def _fit(self, pane: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        _, _, cw, ch = self.cells[0]
        if pane.shape[:2] == (ch, cw):
            return pane
        return np.asarray(cv2.resize(pane, (cw, ch), interpolation=cv2.INTER_AREA),
                          dtype=np.uint8)

    def end_stream(self, stream: str) -> None:
        self.ended.add(stream)
        self._drain()

    def _ready(self, camera: str) -> bool:
        """``camera`` can fill its pane: a new frame, or its last one again."""
        return (
            bool(self.pending[camera])
            or camera in self.ended
            or any(len(q) > MAX_PANE_BACKLOG for q in self.pending.values())
            or time.monotonic() - self.last_seen[camera] > PANE_WAIT_S
        )

    def _drain(self) -> None:
        while any(self.pending.values()) and all(self._ready(c) for c in self.cameras):
            for camera, (x, y, cw, ch) in zip(self.cameras, self.cells, strict=True):
                if self.pending[camera]:
                    self.canvas[y:y + ch, x:x + cw] = self.pending[camera].popleft()
            self.writer.submit(self.canvas.copy())

    def close(self) -> None:
        if self.writer.is_alive():
            self.ended.update(self.cameras)
            self._drain()
        self.writer.finish(FINISH_S)


def recorders(target: RecordTarget, cameras: tuple[str, ...], size: tuple[int, int],
              fps: Mapping[str, float], mask: float | None, *, lossless: bool,
              composite: bool) -> list[Recorder]:
    """The recorders of one target: a tiled one (at the fastest camera's rate), or one per
    camera at that camera's own rate, so its video plays at the speed it was seen (a
    folder target gets a folder per camera, and each an equal share of the space kept)."""
    if composite or target.folder is None:
        fastest = max(fps[c] for c in cameras)
        return [TiledRecorder(target, cameras, size, fastest, mask, lossless=lossless)]
    share = target.retention
    if share is not None:
        share = share.shared(len(cameras))
    return [CameraRecorder(target.within(camera, share), camera, size, fps[camera], mask,
                           lossless=lossless) for camera in cameras]


def _make_folder(target: RecordTarget) -> None:
    flag = "--record_dir" if target.folder is not None else "--output"
    make_folder(target.directory, "folder", flag, takes="path")
