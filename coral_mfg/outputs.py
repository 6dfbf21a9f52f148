"""Outputs: the JSON Lines event log and the side-by-side mp4 recording.

Both run on one output thread fed by a bounded queue, so drawing and encoding
never hold up inference, and both are closed on every exit path.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.errors import UserError
from coral_mfg.overlay import build_overlay, render_pane
from coral_mfg.results import STREAMS, FrameResult
from coral_mfg.zones import KeepoutZone

log = logging.getLogger(__name__)

#: How long one pane waits for the other's next frame before the other's last
#: frame is repeated (a stalled or lost source must not hold the recording), and
#: how many frames may wait at most (memory).
PANE_WAIT_S = 2.0
MAX_PANE_BACKLOG = 120
QUEUE_SIZE = 64
POLL_S = 0.1


@dataclass(frozen=True)
class StreamEnded:
    """A stream will send no more frames: the recorder stops waiting for its pane."""

    stream: str


@dataclass(frozen=True)
class RunEvent:
    """Something that happened to the run (a source lost, zones reloaded), as its log record.

    It travels through the output queue so the event log keeps it in order with the frames.
    """

    record: dict[str, Any]


OutputItem = FrameResult | StreamEnded | RunEvent


class Sink(Protocol):
    """An output fed by the output thread: it must never block for long."""

    def write(self, result: FrameResult) -> None: ...
    def event(self, record: dict[str, Any]) -> None: ...
    def end_stream(self, stream: str) -> None: ...
    def close(self) -> None: ...


class SinkBase:
    """A sink that ignores what it does not need."""

    def write(self, result: FrameResult) -> None:
        pass

    def event(self, record: dict[str, Any]) -> None:
        pass

    def end_stream(self, stream: str) -> None:
        pass

    def close(self) -> None:
        pass


class EventLog(SinkBase):
    """One JSON object a line, flushed line by line so a crash loses nothing."""

    def __init__(self, path: Path, started: float) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = path.open("w", encoding="utf-8")
        except OSError as exc:
            raise UserError(
                f"cannot write event log {path} ({exc.strerror}); pass another path"
            ) from None
        self.path = path
        self.started = started
        self._lock = threading.Lock()

    def event(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            if self._file.closed:
                return
            self._file.write(line + "\n")
            self._file.flush()

    def write(self, result: FrameResult) -> None:
        self.event(result.to_event(self.started))
        for record in result.events:
            self.event(record)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                self._file.close()


class SideBySideRecorder(SinkBase):
    """Both annotated streams side by side (2W x H), as the window shows them.

    The k-th processed frame of each stream share the k-th recorded frame; a
    stream that has ended (or fallen far behind) repeats its last pane.
    """

    def __init__(
        self, path: Path, size: tuple[int, int], fps: float,
        zones: Callable[[], tuple[KeepoutZone, ...]], mask: float | None,
    ) -> None:
        w, h = size
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot make the folder of {path} ({exc.strerror}); pass a "
                            "writable path to --output") from None
        self.path = path
        self.size = size
        self.zones = zones
        self.mask = mask
        fourcc = cv2.VideoWriter.fourcc(*"mp4v")
        self.writer: cv2.VideoWriter | None = cv2.VideoWriter(str(path), fourcc, fps, (2 * w, h))
        if not self.writer.isOpened():
            raise UserError(f"cannot write video {path}; pass a writable .mp4 path to --output")
        self.pending: dict[str, deque[npt.NDArray[np.uint8]]] = {s: deque() for s in STREAMS}
        self.last: dict[str, npt.NDArray[np.uint8]] = {
            s: np.zeros((h, w, 3), np.uint8) for s in STREAMS
        }
        self.ended: set[str] = set()
        self.last_seen = {s: time.monotonic() for s in STREAMS}

    def write(self, result: FrameResult) -> None:
        zones = self.zones() if result.stream == STREAMS[0] else ()
        pane = render_pane(result, build_overlay(result, zones, self.mask))
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
            if self.writer is not None:
                self.writer.write(np.hstack([self.last[a], self.last[b]]))

    def close(self) -> None:
        if self.writer is None:
            return
        self.ended.update(STREAMS)
        self._drain()
        self.writer.release()
        self.writer = None


class OutputThread(threading.Thread):
    """Feeds results to the sinks; ``put`` waits for room only while not stopping."""

    def __init__(self, sinks: list[Sink], stop: threading.Event) -> None:
        super().__init__(name="outputs", daemon=True)
        self.sinks = sinks
        self.stop_event = stop
        self.queue: queue.Queue[OutputItem] = queue.Queue(QUEUE_SIZE)
        self._done = threading.Event()

    def put(self, item: OutputItem) -> None:
        """Queue an item for every sink; waits for room only while the run is not ending."""
        while True:
            try:
                self.queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                if self._done.is_set():
                    return

    def finish(self, timeout: float) -> None:
        self._done.set()
        if self.ident is not None:
            self.join(timeout)

    def run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=POLL_S)
            except queue.Empty:
                if self._done.is_set():
                    return
                continue
            start = time.perf_counter()
            for sink in self.sinks:
                try:
                    _deliver(sink, item)
                except Exception:
                    log.exception("output %s failed", type(sink).__name__)
            if isinstance(item, FrameResult):
                item.times.output = (time.perf_counter() - start) * 1000.0


def _deliver(sink: Sink, item: OutputItem) -> None:
    match item:
        case StreamEnded(stream):
            sink.end_stream(stream)
        case RunEvent(record):
            sink.event(record)
        case _:
            sink.write(item)
