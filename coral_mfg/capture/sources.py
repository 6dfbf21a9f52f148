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
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.config.settings import StreamConfig
from coral_mfg.config.validators import redact_url
from coral_mfg.core.backoff import FIRST_S, MAX_S, Backoff
from coral_mfg.core.clock import POLL_S
from coral_mfg.core.errors import UserError
from coral_mfg.core.events import EventSink, SourceLost, SourceRestored, Stamper
from coral_mfg.core.frame import Frame
from coral_mfg.core.threads import as_batch_work

log = logging.getLogger(__name__)

OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000
CAMERA_FPS = 30.0
#: A camera or stream that comes back must be watched again within seconds
#: (safety monitoring), so its reopen attempts never space out further than this.
BACKOFF_LIVE_MAX_S = 2.0
WATCH_S = 0.2
BAD_FRAMES_LIMIT = 30
#: A looping file whose decoded frames fit in this much memory is decoded once
#: and replayed from memory: a wall-screen demo then spends its CPU on inference.
LOOP_CACHE_BYTES = 256 * 2**20
#: One decoder thread per source: FFmpeg's frame threads add frames of latency
#: and, on a small CPU, take cores from inference for no gain in throughput.
DECODE_THREADS = 1


class SourceKind(StrEnum):
    """What a source spec names; each kind is opened, paced and recovered differently."""

    FILE = "file"
    CAMERA = "camera"
    STREAM = "stream"


def source_kind(spec: str) -> SourceKind:
    if "://" in spec:
        return SourceKind.STREAM
    if spec.startswith("/dev/video"):
        return SourceKind.CAMERA
    return SourceKind.FILE


def open_capture(spec: str, width: int, height: int) -> cv2.VideoCapture:
    """Open a source and read nothing yet; a user error names it when it cannot open."""
    kind = source_kind(spec)
    if kind is SourceKind.FILE:
        path = Path(spec)
        if not path.is_file():
            raise UserError(_not_a_video_file(path))
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
        raise UserError(f"cannot open {kind} {redact_url(spec)}: {fix}")
    return cap


def _not_a_video_file(path: Path) -> str:
    """Why ``path`` cannot be read as a video file, in words, with the fix."""
    fix = "pass a video file, /dev/videoN or a URL"
    if path.is_dir():
        return f"{path} is a folder, not a video file: {fix}"
    if path.is_fifo():
        return (f"{path} is a named pipe (FIFO), which cannot be read as a video file here "
                f"(it would wait for a writer for ever): {fix}, e.g. an rtsp:// stream")
    if path.exists():
        return f"{path} is not a regular file: {fix}"
    return (f"video file {path} not found: pass an existing file, /dev/videoN or a URL "
            "(run 'coral-mfg fetch-assets' for the samples)")


def source_fps(cap: VideoSource) -> float:
    """The source's frame rate, or the camera default when it reports none or nonsense."""
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if 1.0 <= fps <= 240.0 else CAMERA_FPS


def probe_source(
    spec: str, width: int, height: int, stream: str = ""
) -> tuple[cv2.VideoCapture, Frame | None]:
    """Open a source and decode its first frame, so a bad input fails at start-up."""
    cap = open_capture(spec, width, height)
    ok, image = cap.read()
    if not ok or image is None or image.ndim != 3:
        cap.release()
        what = "video file" if source_kind(spec) is SourceKind.FILE else "source"
        raise UserError(
            f"{what} {redact_url(spec)} delivers no frames (empty, truncated or not a video); "
            "pass a playable video"
        )
    first = Frame(stream, 0, 0.0, time.monotonic(), np.asarray(image, dtype=np.uint8), 0.0)
    return cap, first


class VideoSource(Protocol):
    """What capture needs of a source: cv2.VideoCapture's reading interface."""

    def read(self) -> tuple[bool, Any]: ...
    def get(self, prop: int) -> float: ...
    def set(self, prop: int, value: float) -> bool: ...
    def release(self) -> None: ...


class FrameSlot:
    """The hand-off between a capture thread and the scheduler.

    ``leaky``: one slot; a new frame replaces one not yet taken, and the loss is
    counted. Otherwise up to ``capacity`` frames wait and the producer waits for
    room, for as long as the stop event is clear.

    ``cond`` is the scheduler's: a frame put wakes one of its idle threads. The
    producer waits for room on an event of its own that only a take sets, so
    neither side is woken for what the other does with the other streams.
    """

    def __init__(self, cond: threading.Condition, leaky: bool, capacity: int = 2) -> None:
        self.cond = cond
        self.leaky = leaky
        self.capacity = 1 if leaky else capacity
        self.frames: list[Frame] = []
        self.dropped = 0
        self._room = threading.Event()

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        if not self.leaky and not self._await_room(stop):
            return False
        with self.cond:
            if self.leaky and self.frames:
                self.frames.clear()
                self.dropped += 1
            self.frames.append(frame)
            self.cond.notify()
            return True

    def _await_room(self, stop: threading.Event) -> bool:
        """Until there is room (only this producer fills it), or False when stopped."""
        while not stop.is_set():
            with self.cond:
                if len(self.frames) < self.capacity:
                    return True
                self._room.clear()  # under cond: a take after this sets it again
            self._room.wait(POLL_S)
        return False

    def take(self) -> Frame | None:
        """The oldest waiting frame, or None; the caller holds ``cond``."""
        if not self.frames:
            return None
        frame = self.frames.pop(0)
        self._room.set()
        return frame

    def discard(self) -> None:
        """Drop every waiting frame (the stream is done); the caller holds ``cond``."""
        self.frames.clear()
        self._room.set()

    def __len__(self) -> int:
        return len(self.frames)


def _as_bgr(image: Any) -> npt.NDArray[np.uint8] | None:
    """A usable BGR frame, or None for garbage (wrong type, empty, odd channels)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        return None
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), dtype=np.uint8)
    return None


class Outcome(StrEnum):
    """Why a reader ended, which tells its supervisor whether to reopen the source."""

    RUNNING = "running"
    END = "end"  # a file reached its end and does not loop
    FAILED = "failed"  # the source stopped delivering
    STOPPED = "stopped"


class Heartbeat:
    """When a reader last showed life, read by its supervisor's watchdog.

    Waiting for the scheduler to take a frame is back-pressure, not a stall, so
    that time never counts as quiet.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = time.monotonic()
        self._waiting = False

    def beat(self) -> None:
        with self._lock:
            self._at = time.monotonic()

    def set_waiting(self, waiting: bool) -> None:
        with self._lock:
            self._waiting = waiting
            self._at = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds without a sign of life; 0 while handing a frame over."""
        with self._lock:
            return 0.0 if self._waiting else time.monotonic() - self._at


class _Replay:
    """A looping file's decoded frames, kept to replay it from memory.

    Only a file whose frames fit in :data:`LOOP_CACHE_BYTES` is kept, and only
    a pass with no gap: a replay must be the file, frame for frame.
    """

    def __init__(self, enabled: bool) -> None:
        self.frames: list[npt.NDArray[np.uint8]] | None = [] if enabled else None
        self.bytes = 0
        self.playing = False

    def keep(self, image: npt.NDArray[np.uint8]) -> None:
        if self.frames is None:
            return
        self.bytes += image.nbytes
        if self.bytes > LOOP_CACHE_BYTES:
            self.frames = None
            return
        image.setflags(write=False)  # shared by every later pass: nobody may draw on it
        self.frames.append(image)

    def drop(self) -> None:
        self.frames = None

    def start(self, decoded: int) -> bool:
        """Replay from memory if the whole file was kept; True when it does."""
        if self.frames is not None and len(self.frames) == decoded > 0:
            self.playing = True
        return self.playing

    def get(self, index: int) -> npt.NDArray[np.uint8] | None:
        assert self.frames is not None
        return self.frames[index] if index < len(self.frames) else None


class CaptureThread(threading.Thread):
    """Reads one opened source into a :class:`FrameSlot` until its end, a failure or a stop.

    Each pass of the loop is four steps: hold while paused, take the next image
    (decoded or replayed), pace it (files in real time), hand it over. The end
    of a file is what the decoder says: the first read that yields nothing.
    """

    def __init__(
        self,
        stream: str,
        spec: str,
        cap: VideoSource,
        slot: FrameSlot,
        stop: threading.Event,
        *,
        realtime: bool,
        loop: bool,
        first: Frame | None = None,
        paused: threading.Event | None = None,
    ) -> None:
        super().__init__(name=f"capture-{stream}", daemon=True)
        self.stream = stream
        self.spec = spec
        self.shown = redact_url(spec)  # as logged: never a URL's password
        self.kind = source_kind(spec)
        self.cap = cap
        self.slot = slot
        self.stop_event = stop
        self.pace = realtime and self.kind is SourceKind.FILE
        self.loop = loop and self.kind is SourceKind.FILE
        self.fps = source_fps(cap)
        self._pending = first
        self._replay = _Replay(self.loop)
        self.paused = paused or threading.Event()
        self.outcome = Outcome.RUNNING
        self.reason = ""
        self.bad_frames = 0
        self.index = 0
        self.heartbeat = Heartbeat()
        self._clock = time.monotonic()

    def run(self) -> None:
        as_batch_work()
        try:
            while not self.stop_event.is_set() and self.outcome is Outcome.RUNNING:
                self._step()
        except Exception as exc:  # a source must never take the app down
            self._finish(Outcome.FAILED, f"{type(exc).__name__}: {exc}")
            log.debug("capture %s raised", self.stream, exc_info=True)
        finally:
            try:
                self.cap.release()
            except Exception:
                log.debug("release of %s failed", self.shown, exc_info=True)
            if self.outcome is Outcome.RUNNING:
                self.outcome = Outcome.STOPPED

    def _finish(self, outcome: Outcome, reason: str = "") -> None:
        self.outcome, self.reason = outcome, reason

    def _step(self) -> None:
        if self.paused.is_set():
            self._hold()
            return
        image, ms, answered = self._next_image()
        if not answered:
            self._at_end()
            return
        if image is None:
            self._bad_frame()
            return
        self.bad_frames = 0
        pts = self._pts()
        if self.pace and not self._wait_until(pts):
            return
        frame = Frame(self.stream, self.index, pts, time.monotonic(), image, ms,
                      scene=self._clock + pts)
        if self._hand_over(frame):
            self.index += 1

    def _hold(self) -> None:
        """Wait out a pause; a paced file resumes where it was."""
        held = time.monotonic()
        while self.paused.is_set() and not self.stop_event.wait(POLL_S):
            self.heartbeat.beat()
        self._clock += time.monotonic() - held

    def _read(self) -> tuple[npt.NDArray[np.uint8] | None, float, bool]:
        """(frame or None, ms, whether the source answered at all)."""
        start = time.perf_counter()
        ok, image = self.cap.read()
        ms = (time.perf_counter() - start) * 1000.0
        self.heartbeat.beat()
        if not ok:
            return None, ms, False
        return _as_bgr(image), ms, True

    def _next_image(self) -> tuple[npt.NDArray[np.uint8] | None, float, bool]:
        """The next frame: replayed from memory, the probe's first frame, or decoded."""
        if self._replay.playing:
            image = self._replay.get(self.index)
            return image, 0.0, image is not None
        if self._pending is not None:
            image, ms, answered = self._pending.image, self._pending.decode_ms, True
            self._pending = None
        else:
            image, ms, answered = self._read()
        if image is not None:
            self._replay.keep(image)
        return image, ms, answered

    def _at_end(self) -> None:
        """No frame: a live source is lost; a file has ended, and loops if asked to."""
        if self.kind is not SourceKind.FILE:
            self._finish(Outcome.FAILED, "no frame from the source (disconnected?)")
        elif not (self.loop and self.index > 0):
            self._finish(Outcome.END)
        elif self._replay.start(self.index):
            self._restart()
        elif self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            self._replay.drop()
            self._restart()
        else:
            self._finish(Outcome.FAILED, "cannot rewind the file")

    def _restart(self) -> None:
        """The next pass keeps the file's cadence: its first frame is due one frame
        interval after the last one (handing it over at once would replace that
        last frame in a leaky slot before it was taken)."""
        self._clock += self.index / self.fps
        self.index = 0

    def _bad_frame(self) -> None:
        self._replay.drop()  # a gap: the replay would not match the file
        self.bad_frames += 1
        if self.bad_frames % BAD_FRAMES_LIMIT == 0:
            self._finish(Outcome.FAILED, f"{self.bad_frames} unusable frames in a row")

    def _pts(self) -> float:
        if self.kind is SourceKind.FILE:
            return self.index / self.fps
        return time.monotonic() - self._clock

    def _wait_until(self, pts: float) -> bool:
        """Pace a file at its own rate; False when stopped meanwhile."""
        delay = self._clock + pts - time.monotonic()
        return not (delay > 0 and self.stop_event.wait(delay))

    def _hand_over(self, frame: Frame) -> bool:
        self.heartbeat.set_waiting(True)
        try:
            return self.slot.put(frame, self.stop_event)
        finally:
            self.heartbeat.set_waiting(False)

    @property
    def dropped(self) -> int:
        return self.slot.dropped


Opener = Callable[[], tuple[VideoSource, Frame | None]]


class SourceSupervisor(threading.Thread):
    """Keeps one input alive: reopens it with backoff when it fails or stalls.

    A reader thread does the decoding; this thread watches it. A source that
    stops delivering, raises, or sends no frame for ``stall_s`` seconds is
    logged as lost, and reopened after 1, 2, 4 ... (at most 30) seconds, so
    the other stream never notices; a camera or stream is retried at least
    every 2 seconds, so it is watched again soon after it returns. A reader
    stuck inside a driver call is abandoned, not waited for.
    """

    def __init__(
        self,
        config: StreamConfig,
        slot: FrameSlot,
        stop: threading.Event,
        *,
        opener: Opener,
        on_end: Callable[[str], None],
        on_event: EventSink,
        stamper: Stamper,
        paused: threading.Event | None = None,
        first: tuple[VideoSource, Frame | None] | None = None,
        backoff: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(name=f"source-{config.name}", daemon=True)
        self.config = config
        self.stream = config.name
        self.spec = config.spec
        self.shown = redact_url(config.spec)  # as logged: never a URL's password
        self.slot = slot
        self.stop_event = stop
        self.opener = opener
        self.on_end = on_end
        self.on_event = on_event
        self.stamper = stamper
        self.paused = paused or threading.Event()
        live = source_kind(config.spec) is not SourceKind.FILE
        shortest, longest = backoff or (FIRST_S, BACKOFF_LIVE_MAX_S if live else MAX_S)
        self.backoff = Backoff(shortest, longest)
        self._first = first
        self.lost_reason: str | None = None
        self.lost_count = 0
        self._lost_at = 0.0

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    def run(self) -> None:
        try:
            self._supervise()
        except Exception:
            log.exception("supervisor of %s failed", self.stream)
        finally:
            self.on_end(self.stream)

    def _supervise(self) -> None:
        while not self.stop_event.is_set():
            opened = self._first
            self._first = None
            if opened is None:
                try:
                    opened = self.opener()
                except Exception as exc:
                    reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}"
                    self._lose(reason)
                    if self.stop_event.wait(self.backoff.wait()):
                        return
                    continue
            if self.lost_reason is not None:
                self.on_event(SourceRestored(
                    stream=self.stream, after_s=round(time.monotonic() - self._lost_at, 2),
                    time=self.stamper.run_time(), stamp=self.stamper.stamp()))
                log.warning("%s: source %s restored", self.stream, self.shown)
                self.lost_reason = None
                self.backoff.reset()
            cap, first = opened
            reader_stop = threading.Event()
            reader = CaptureThread(
                self.stream, self.spec, cap, self.slot, reader_stop,
                realtime=self.config.realtime, loop=self.config.loop, first=first,
                paused=self.paused,
            )
            reader.start()
            why = self._watch(reader, reader_stop)
            if why is None:
                return  # stopped, or a file's end
            self._lose(why)
            if self.stop_event.wait(self.backoff.wait()):
                return

    def _watch(self, reader: CaptureThread, reader_stop: threading.Event) -> str | None:
        """Wait for the reader to end or stall; the loss reason, or None for a normal end."""
        while True:
            if self.stop_event.wait(WATCH_S):
                reader_stop.set()
                reader.join(POLL_S * 5)
                return None
            if not reader.is_alive():
                if reader.outcome is Outcome.FAILED:
                    return reader.reason
                return None
            quiet = reader.heartbeat.quiet_for()
            if not self.paused.is_set() and quiet > self.config.stall_s:
                reader_stop.set()  # it exits if it ever comes back; it is not waited for
                return f"no frame for {quiet:.0f} s (stalled)"

    def _lose(self, reason: str) -> None:
        if self.lost_reason is None:
            self._lost_at = time.monotonic()
            self.lost_count += 1
            self.on_event(SourceLost(stream=self.stream, reason=reason,
                                     time=self.stamper.run_time(), stamp=self.stamper.stamp()))
            log.warning("%s: source %s lost: %s", self.stream, self.shown, reason)
        self.lost_reason = reason
