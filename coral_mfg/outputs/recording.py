"""The side-by-side recording: both annotated panes, as the window shows them.

Each pane carries its stream's name and the wall-clock time it was captured
(:func:`~coral_mfg.outputs.overlay.annotated_pane`). Panes are composed on the output
thread; encoding happens on the :class:`H264Writer`'s own thread.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from coral_mfg.core.files import make_folder
from coral_mfg.core.results import STREAMS, FrameResult
from coral_mfg.outputs.base import SinkBase
from coral_mfg.outputs.encoder import H264Writer, RecordTarget
from coral_mfg.outputs.health import OutputHealth
from coral_mfg.outputs.overlay import annotated_pane

#: How long one pane waits for the other's next frame before the other's last
#: frame is repeated (a stalled or lost source must not hold the recording), and
#: how many frames may wait at most (memory).
PANE_WAIT_S = 2.0
MAX_PANE_BACKLOG = 120
FINISH_S = 10.0



class SideBySideRecorder(SinkBase):
    """Both annotated streams side by side (2W x H), in H.264.

    The k-th processed frame of each stream share the k-th recorded frame; a
    stream that has ended (or fallen far behind) repeats its last pane.
    """

    def __init__(
        self, target: RecordTarget, size: tuple[int, int], fps: float,
        mask: float | None, *, lossless: bool,
    ) -> None:
        w, h = size
        _make_folder(target)
        self.size = size
        self.mask = mask
        self.writer = H264Writer(target, (2 * w, h), fps, lossless=lossless)
        self.pending: dict[str, deque[npt.NDArray[np.uint8]]] = {s: deque() for s in STREAMS}
        self.last: dict[str, npt.NDArray[np.uint8]] = {
            s: np.zeros((h, w, 3), np.uint8) for s in STREAMS
        }
        self.ended: set[str] = set()
        self.last_seen = {s: time.monotonic() for s in STREAMS}

    def start(self) -> None:
        self.writer.start()

    @property
    def health(self) -> OutputHealth:
        return self.writer.health

    def write(self, result: FrameResult) -> None:
        pane = annotated_pane(result, self.mask)
        self.pending[result.stream].append(pane)
        self.last_seen[result.stream] = time.monotonic()
        self._drain()

    def end_stream(self, stream: str) -> None:
        self.ended.add(stream)
        self._drain()

    def _ready(self, stream: str, other: str) -> bool:
        """``stream`` can fill its pane: a new frame, or repeat its last one."""
        return (
            bool(self.pending[stream])
            or stream in self.ended
            or len(self.pending[other]) > MAX_PANE_BACKLOG
            or time.monotonic() - self.last_seen[stream] > PANE_WAIT_S
        )

    def _drain(self) -> None:
        a, b = STREAMS
        while (self.pending[a] or self.pending[b]) and self._ready(a, b) and self._ready(b, a):
            for s in STREAMS:
                if self.pending[s]:
                    self.last[s] = self.pending[s].popleft()
            self.writer.submit(np.hstack([self.last[a], self.last[b]]))

    def close(self) -> None:
        if self.writer.is_alive():
            self.ended.update(STREAMS)
            self._drain()
        self.writer.finish(FINISH_S)

    def counts(self) -> dict[str, Any]:
        return self.writer.counts()


def _make_folder(target: RecordTarget) -> None:
    flag = "--record_dir" if target.folder is not None else "--output"
    make_folder(target.directory, "folder", flag, takes="path")
