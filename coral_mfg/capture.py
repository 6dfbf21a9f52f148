"""Capture: one thread per input, handing frames to the scheduler.

Live sources and paced files keep only the newest frame (a leaky hand-off, so
latency never grows) and count what they drop. Unpaced files hand over every
frame in order, so a ``--no-realtime`` run is deterministic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.errors import UserError

log = logging.getLogger(__name__)

OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000
CAMERA_FPS = 30.0
#: One decoder thread per source: FFmpeg's frame threads add frames of latency
#: and, on a small CPU, take cores from inference for no gain in throughput.
DECODE_THREADS = 1
POLL_S = 0.1


class SourceKind(StrEnum):
    FILE = "file"
    CAMERA = "camera"
    STREAM = "stream"


def source_kind(spec: str) -> SourceKind:
    if "://" in spec:
        return SourceKind.STREAM
    if spec.startswith("/dev/video"):
        return SourceKind.CAMERA
    return SourceKind.FILE


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame at source resolution, with where and when it came from."""

    stream: str
    index: int  # 0-based index in the source (restarts when a file loops)
    pts: float  # seconds in the source
    captured: float  # time.monotonic() when decoded
    image: npt.NDArray[np.uint8]
    decode_ms: float

    @property
    def size(self) -> tuple[int, int]:
        return (self.image.shape[1], self.image.shape[0])


def open_capture(spec: str, width: int, height: int) -> cv2.VideoCapture:
    """Open a source and read nothing yet; a user error names it when it cannot open."""
    kind = source_kind(spec)
    if kind is SourceKind.FILE:
        path = Path(spec)
        if not path.is_file():
            raise UserError(
                f"video file {spec} not found: pass an existing file, /dev/videoN or a URL "
                "(run 'coral-mfg fetch-assets' for the samples)"
            )
        cap = cv2.VideoCapture(
            str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, DECODE_THREADS]
        )
        fix = "pass a video file OpenCV/FFmpeg can decode (mp4, mkv, avi ...)"
    elif kind is SourceKind.CAMERA:
        if not Path(spec).exists():
            raise UserError(f"camera {spec} not found: plug it in or pass another /dev/videoN")
        cap = cv2.VideoCapture(spec, cv2.CAP_V4L2)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            cap.set(cv2.CAP_PROP_FPS, CAMERA_FPS)
        fix = "check that no other program holds it and that it is a capture device"
    else:
        cap = cv2.VideoCapture(
            spec,
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
             cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS,
             cv2.CAP_PROP_N_THREADS, DECODE_THREADS],
        )
        fix = "check the URL and that the stream is up"
    if not cap.isOpened():
        cap.release()
        raise UserError(f"cannot open {kind} {spec}: {fix}")
    return cap


def probe_source(spec: str, width: int, height: int) -> tuple[cv2.VideoCapture, Frame | None]:
    """Open a source and decode its first frame, so a bad input fails at start-up."""
    cap = open_capture(spec, width, height)
    ok, image = cap.read()
    if not ok or image is None or image.ndim != 3:
        cap.release()
        what = "video file" if source_kind(spec) is SourceKind.FILE else "source"
        raise UserError(
            f"{what} {spec} delivers no frames (empty, truncated or not a video); "
            "pass a playable video"
        )
    first = Frame("", 0, 0.0, time.monotonic(), np.asarray(image, dtype=np.uint8), 0.0)
    return cap, first


@dataclass
class StreamStats:
    """Counters a capture thread owns; others only read them."""

    captured: int = 0
    dropped: int = 0
    loops: int = 0
    ended: bool = False


class FrameSlot:
    """The hand-off between a capture thread and the scheduler.

    ``leaky``: one slot; a new frame replaces one not yet taken, and the loss is
    counted. Otherwise up to ``capacity`` frames wait and the producer waits for
    room, for as long as the stop event is clear.
    """

    def __init__(self, cond: threading.Condition, leaky: bool, capacity: int = 2) -> None:
        self.cond = cond
        self.leaky = leaky
        self.capacity = 1 if leaky else capacity
        self.frames: list[Frame] = []
        self.dropped = 0

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        with self.cond:
            if self.leaky:
                if self.frames:
                    self.frames.clear()
                    self.dropped += 1
            else:
                while len(self.frames) >= self.capacity:
                    if stop.is_set():
                        return False
                    self.cond.wait(POLL_S)
            self.frames.append(frame)
            self.cond.notify_all()
            return True

    def take(self) -> Frame | None:
        """The oldest waiting frame, or None; the caller holds ``cond``."""
        if not self.frames:
            return None
        frame = self.frames.pop(0)
        self.cond.notify_all()
        return frame

    def __len__(self) -> int:
        return len(self.frames)


class CaptureThread(threading.Thread):
    """Decodes one source into a :class:`FrameSlot` until the end, a stop, or a limit."""

    def __init__(
        self,
        stream: str,
        spec: str,
        cap: cv2.VideoCapture,
        slot: FrameSlot,
        stop: threading.Event,
        *,
        realtime: bool,
        loop: bool,
        on_end: Callable[[str], None],
        first: Frame | None = None,
        paused: threading.Event | None = None,
    ) -> None:
        super().__init__(name=f"capture-{stream}", daemon=True)
        self.stream = stream
        self.spec = spec
        self.kind = source_kind(spec)
        self.cap = cap
        self.slot = slot
        self.stop_event = stop
        self.realtime = realtime
        self.loop = loop and self.kind is SourceKind.FILE
        self.on_end = on_end
        self.stats = StreamStats()
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 1.0 <= fps <= 240.0 else CAMERA_FPS
        self._pending = first
        self.paused = paused or threading.Event()
        self.error: str | None = None

    def _read(self) -> tuple[npt.NDArray[np.uint8] | None, float]:
        start = time.perf_counter()
        ok, image = self.cap.read()
        ms = (time.perf_counter() - start) * 1000.0
        if not ok or image is None:
            return None, ms
        return np.asarray(image, dtype=np.uint8), ms

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a source must never take the app down
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("capture %s failed", self.stream)
        finally:
            self.cap.release()
            self.stats.ended = True
            self.on_end(self.stream)

    def _run(self) -> None:
        index = 0
        started = time.monotonic()
        pace = self.realtime and self.kind is SourceKind.FILE
        while not self.stop_event.is_set():
            if self.paused.is_set():
                held = time.monotonic()
                while self.paused.is_set() and not self.stop_event.wait(POLL_S):
                    pass
                started += time.monotonic() - held  # a paced file resumes where it was
                continue
            if self._pending is not None:
                image: npt.NDArray[np.uint8] | None = self._pending.image
                ms = self._pending.decode_ms
                self._pending = None
            else:
                image, ms = self._read()
            if image is None:
                if self.loop and index > 0:
                    self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    self.stats.loops += 1
                    index = 0
                    started = time.monotonic()
                    continue
                return
            if self.kind is SourceKind.FILE:
                pts = index / self.fps
                if pace:
                    delay = started + pts - time.monotonic()
                    if delay > 0 and self.stop_event.wait(delay):
                        return
            else:
                pts = time.monotonic() - started
            frame = Frame(self.stream, index, pts, time.monotonic(), image, ms)
            if not self.slot.put(frame, self.stop_event):
                return
            self.stats.captured += 1
            index += 1

    @property
    def dropped(self) -> int:
        return self.slot.dropped
