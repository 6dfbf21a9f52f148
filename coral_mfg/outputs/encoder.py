"""H.264 recording in fragmented MP4 files, encoded on a thread of its own.

Why fragmented MP4: a plain MP4 keeps its index at the end, written only by a
clean exit, so a SIGKILL or a power cut loses the whole file. Here the header
goes first and a self-contained fragment follows every keyframe (one a
second), so a killed run keeps all but its last second or two, and browsers
play the files as they are. Why a thread: encoding must never hold up
inference; frames wait in a bounded queue and a full queue drops (counted)
unless the run asked for every frame (``--no-realtime``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from coral_mfg.core.clock import POLL_S, file_utc
from coral_mfg.core.threads import as_batch_work
from coral_mfg.outputs.health import OutputHealth, os_reason
from coral_mfg.outputs.retention import GB, Retention, free_bytes, prune

log = logging.getLogger(__name__)

QUEUE_FRAMES = 16
CHECK_EVERY_S = 10.0  # free space and retention
#: Fragmenting at each keyframe, with the header first, is what makes a cut file playable.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
ENCODER_THREADS = 1  # one core stays with inference on a small machine
PREFIX = "coral_mfg-"
RECENT_FILES = 8  # named in the summary; a shift's segments are counted, not listed


@dataclass(frozen=True)
class RecordTarget:
    """Where a recording goes: one file (``--output``) or timestamped segments in a folder."""

    file: Path | None = None
    folder: Path | None = None
    segment_s: float = float("inf")
    retention: Retention | None = None
    preset: str = "veryfast"

    @property
    def where(self) -> Path:
        where = self.folder if self.folder is not None else self.file
        assert where is not None, "a target names a file or a folder"
        return where

    def within(self, camera: str, retention: Retention | None) -> RecordTarget:
        """The same recording, for one camera: in a folder of its own, under its share."""
        assert self.folder is not None, "only a folder holds one per camera"
        return replace(self, folder=self.folder / camera, retention=retention)

    @property
    def directory(self) -> Path:
        """The folder the files go to: its disk is the one that fills (a segment folder may
        be a disk of its own, mounted there)."""
        return self.folder if self.folder is not None else self.where.parent

    def path(self, part: int) -> Path:
        """The ``part``-th file (0: the first; more after a fault or a new segment)."""
        if self.folder is None:
            assert self.file is not None
            if part == 0 or (self.file.exists() and not self.file.is_file()):
                return self.file  # a device or pipe is written again, never beside
            return self.file.with_name(f"{self.file.stem}.{part}{self.file.suffix}")
        stamp = file_utc(time.time())
        path = self.folder / f"{PREFIX}{stamp}.mp4"
        n = 1
        while path.exists():
            n += 1
            path = self.folder / f"{PREFIX}{stamp}-{n}.mp4"
        return path


def playable_end(data: bytes) -> int:
    """Where a fragmented MP4 that was cut off stops being playable: the end of its
    last whole ``moof`` + ``mdat`` pair (0 when not even one is whole).

    A write that failed part way (a full disk) leaves a box shorter than its header
    says, or a fragment without its media; players then fail on the whole file
    ("Invalid NAL unit size"). Cutting the file back here keeps every whole second.
    """
    pos, end, header_ok, moof = 0, 0, False, False
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if size == 1 and pos + 16 <= len(data):
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        if size < 8 or pos + size > len(data):
            break  # cut inside this box
        if kind == b"moov":
            header_ok = True
        elif kind == b"moof":
            moof = True
        elif kind == b"mdat" and moof and header_ok:
            end, moof = pos + size, False
        pos += size
    return end


def repair(path: Path) -> bool:
    """Cut a recording back to its playable part, or delete it when none is; True when
    something playable is left."""
    try:
        data = path.read_bytes()
        end = playable_end(data)
        if end == 0:
            path.unlink(missing_ok=True)
            log.warning("recording %s held no whole second of video and was deleted", path)
            return False
        if end < len(data):
            os.truncate(path, end)
            log.warning("recording %s was cut by a write error: kept its first %d of %d "
                        "bytes, which play", path, end, len(data))
    except OSError as exc:
        log.warning("recording %s could not be checked after a write error: %s", path,
                    os_reason(exc))
    return True


class _File:
    """One open fragmented MP4 with its H.264 stream."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float, preset: str) -> None:
        self.path = path
        self.frames = 0
        rate = Fraction(fps).limit_denominator(1001)
        self.container: Any = av.open(str(path), "w", format="mp4",
                                      options={"movflags": MOVFLAGS, "flush_packets": "1"})
        try:
            stream: Any = self.container.add_stream(
                "libx264", rate=rate, options={"preset": preset, "tune": "zerolatency"})
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = max(1, round(fps))
            stream.codec_context.thread_count = ENCODER_THREADS
        except BaseException:
            self.container.close()
            raise
        self.stream = stream

    def write(self, image: npt.NDArray[np.uint8]) -> None:
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = self.frames
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and end the file; on a broken disk, keep what is there."""
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()


class H264Writer(threading.Thread):
    """Encodes submitted frames into the target; survives a full or failing disk."""

    def __init__(self, target: RecordTarget, size: tuple[int, int], fps: float, *,
                 lossless: bool, name: str = "recording") -> None:
        super().__init__(name=name, daemon=True)
        self.target = target
        self.size = size
        self.fps = fps
        self.lossless = lossless
        self.health = OutputHealth(name)
        self.queue: queue.Queue[npt.NDArray[np.uint8] | None] = queue.Queue(QUEUE_FRAMES)
        self.received = 0  # = written + dropped + lost, once the queue is empty
        self.segments = 0
        self.recent: deque[Path] = deque(maxlen=RECENT_FILES)
        self.deleted = 0
        self.disk_warning: str | None = None
        self.cpu_s = 0.0  # CPU time the encoding took, known once the thread ends
        self._file: _File | None = None
        self._part = 0
        self._checked_at = 0.0
        self._closing = threading.Event()

    # --- the caller's side ------------------------------------------------------------------

    def submit(self, image: npt.NDArray[np.uint8]) -> None:
        """Queue a frame; a full queue drops it (counted) unless every frame is wanted."""
        self.received += 1
        while not self._closing.is_set():
            try:
                self.queue.put(image, timeout=POLL_S if self.lossless else 0)
                return
            except queue.Full:
                if not self.lossless:
                    break
        self.health.drop()

    def finish(self, timeout: float) -> None:
        """Encode what is queued, end the file, and stop."""
        self._closing.set()
        if self.ident is None:
            return
        with contextlib.suppress(queue.Full):
            self.queue.put(None, timeout=timeout)
        self.join(timeout)
        if self.is_alive():
            log.warning("recording: the encoder did not finish in %.0f s; the file keeps "
                        "what was written", timeout)

    # --- the encoder thread -----------------------------------------------------------------

    def run(self) -> None:
        as_batch_work()
        try:
            while True:
                image = self.queue.get()
                if image is None:
                    return
                self._check_disk()
                self._encode(image)
        finally:
            self._end_file()
            self.cpu_s = time.thread_time()

    def _encode(self, image: npt.NDArray[np.uint8]) -> None:
        if self._file is None and not (
                self.health.may_write(self.target.directory) and self._open()):
            return
        assert self._file is not None
        try:
            self._file.write(image)
        except (OSError, av.FFmpegError) as exc:
            self._fail(exc)
            return
        self.health.wrote()
        if self._file.frames >= self.target.segment_s * self.fps:
            self._end_file()
            self._part += 1

    def _open(self) -> bool:
        """A new file; when it cannot be made, the frame that needed it is lost."""
        path = self.target.path(self._part)
        try:
            self._file = _File(path, self.size, self.fps, self.target.preset)
        except (OSError, av.FFmpegError) as exc:
            self.health.failed(os_reason(exc))
            if path.is_file() and self.target.folder is not None:
                repair(path)  # a segment begun on a full disk: nothing in it plays
            return False
        self.segments += 1
        self.recent.append(path)
        log.info("recording to %s (H.264)", path)
        return True

    def _fail(self, exc: BaseException) -> None:
        self.health.failed(os_reason(exc))
        path = self._file.path if self._file is not None else None
        self._end_file()
        if path is not None and path.is_file() and not repair(path):
            with contextlib.suppress(ValueError):
                self.recent.remove(path)
        self._part += 1  # the next attempt starts a new file beside the cut one
        self._checked_at = 0.0  # free space at the next frame: retention may make room

    def _end_file(self) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()
        except (OSError, av.FFmpegError) as exc:
            log.debug("recording %s ended on a write error: %s", file.path, exc)
            if file.path.is_file() and not repair(file.path):
                with contextlib.suppress(ValueError):
                    self.recent.remove(file.path)

    def _check_disk(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < CHECK_EVERY_S:
            return
        self._checked_at = now
        r = self.target.retention
        try:
            if r is not None and self.target.folder is not None:
                current = self._file.path if self._file is not None else None
                pruned = prune(self.target.folder, r, current)
                self.deleted += len(pruned.deleted)
                for gone in pruned.deleted:  # the summary names files that exist
                    with contextlib.suppress(ValueError):
                        self.recent.remove(gone)
                low, free = pruned.low, pruned.free_bytes
            else:
                free = free_bytes(self.target.directory)
                low = r is not None and free < r.min_free_bytes
        except OSError as exc:
            log.debug("free space of %s unknown: %s", self.target.where, exc)
            return
        self._warn_disk(low, free)

    def _warn_disk(self, low: bool, free: int) -> None:
        if low and self.disk_warning is None:
            self.disk_warning = (f"DISK LOW: {free / GB:.1f} GB free under "
                                 f"{self.target.where}")
            log.warning("%s; no older recording is left to delete: free some space",
                        self.disk_warning)
        elif not low and self.disk_warning is not None:
            self.disk_warning = None
            log.info("disk space under %s is back above the floor (%.1f GB free)",
                     self.target.where, free / GB)

    def disk_warning_now(self) -> str | None:
        """What the screen should say of the disk: DISK LOW, or None."""
        return self.disk_warning

    def counts(self) -> dict[str, Any]:
        return {"received": self.received, **self.health.counts(), "files": self.segments,
                "recent": [str(p) for p in self.recent],
                "deleted": self.deleted, "disk_low": self.disk_warning is not None,
                "encoder_cpu_s": round(self.cpu_s, 2)}
