"""What the threads of one run share: the stop and the pause, the lock frames move under,
the output queue that keeps events in order with the frames, and the recent rates the
status reports."""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from coral_mfg.core.events import Event, Stamper
from coral_mfg.core.results import FrameResult, SnapshotRequest
from coral_mfg.outputs.base import OutputThread, RunEvent, StreamEnded

#: The recent frames a stream's rates are told over.
RECENT_FRAMES = 30
#: A stream with no frame for this long has a rate of 0, not its last one.
STALE_S = 2.0


@dataclass
class _Recent:
    """When a stream's recent frames were finished, and what their models cost."""

    done: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_FRAMES))
    infer_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_FRAMES))


@dataclass
class RunContext:
    """See the module's docstring; every method is safe from any thread."""

    outputs: OutputThread
    stop: threading.Event
    stamper: Stamper
    streams: tuple[str, ...]
    cond: threading.Condition = field(default_factory=threading.Condition)
    paused: threading.Event = field(default_factory=threading.Event)
    #: something happened that the status should show soon (an entry, a verdict, a fault)
    changed: threading.Event = field(default_factory=threading.Event)
    capture_stops: dict[str, threading.Event] = field(default_factory=dict)
    _ended: queue.SimpleQueue[str] = field(default_factory=queue.SimpleQueue)
    _recent: dict[str, _Recent] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for name in self.streams:
            self.capture_stops.setdefault(name, threading.Event())
            self._recent.setdefault(name, _Recent())

    def event(self, event: Event) -> None:
        """An event no frame carries (a source lost, zones reloaded), made whole."""
        self.outputs.put(RunEvent(event))
        self.changed.set()

    def result(self, result: FrameResult) -> None:
        """A processed frame, with the events it made, to the outputs."""
        with self._lock:
            recent = self._recent[result.stream]
            recent.done.append(time.monotonic())
            if result.times.detect > 0:  # a frame the motion gate held has no inference
                recent.infer_ms.append(result.times.detect + result.times.classify)
        self.outputs.put(result)
        if result.events:
            self.changed.set()

    def final_events(self, events: tuple[Event, ...],
                     pictures: tuple[SnapshotRequest, ...]) -> None:
        """A stream's last events, made as the run stops (no frame carries them)."""
        for event in events:
            self.outputs.put(RunEvent(event, tuple(p for p in pictures if p.event is event)))
        self.changed.set()

    def rates(self, stream: str) -> tuple[float, float]:
        """(frames per second, median inference ms) over the stream's recent frames."""
        with self._lock:
            recent = self._recent[stream]
            done, ms = list(recent.done), list(recent.infer_ms)
        median = statistics.median(ms) if ms else 0.0
        if len(done) < 2 or time.monotonic() - done[-1] > STALE_S:
            return 0.0, median
        span = done[-1] - done[0]
        return ((len(done) - 1) / span if span > 0 else 0.0), median

    def stream_done(self, name: str) -> None:
        """Called with the scheduler's lock held: only flag, never block."""
        self.capture_stops[name].set()
        self._ended.put(name)

    def flush_ended(self) -> None:
        """Tell the outputs which streams have ended (from a thread that may wait)."""
        while True:
            try:
                name = self._ended.get_nowait()
            except queue.Empty:
                return
            self.outputs.put(StreamEnded(name))
