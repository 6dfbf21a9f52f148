"""The scheduler: owns the accelerator and shares it fairly between the streams.

Workers (one per interpreter pair: one for an Edge TPU, as measured best for
the CPU) take frames round-robin from the streams. A stream is processed by
at most one worker at a time, so its frames stay in order for its tracker and
the event log. Every wait is bounded and watches the stop event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from coral_mfg.capture import Frame, FrameSlot
from coral_mfg.inference.client import RequestError, WorkerDownError
from coral_mfg.inference.engine import InferenceEngine
from coral_mfg.results import FrameResult

log = logging.getLogger(__name__)

POLL_S = 0.1
ERROR_STATE_AFTER = 5


class StreamProcessor(Protocol):
    """A stream's own work on a frame (keep-out checks, grading); called by one worker at a time."""

    name: str
    processed: int

    def process(self, frame: Frame, engine: InferenceEngine) -> FrameResult: ...


@dataclass
class StreamState:
    """One stream as the scheduler sees it: its frames, its progress and its errors."""

    processor: StreamProcessor
    slot: FrameSlot
    max_frames: int = 0
    source_ended: bool = False
    busy: bool = False
    done: bool = False
    errors: int = 0
    consecutive_errors: int = 0
    last_error: str = ""
    began: float | None = None  # when its first frame was taken
    last_done: float = 0.0  # when its last frame was finished

    def fps(self) -> float:
        """Frames per second over the time this stream was actually processed."""
        if self.began is None or self.last_done <= self.began:
            return 0.0
        return self.processor.processed / (self.last_done - self.began)

    @property
    def failing(self) -> bool:
        """Repeated inference errors: shown on screen; processing goes on."""
        return self.consecutive_errors >= ERROR_STATE_AFTER

    @property
    def limit_reached(self) -> bool:
        return self.max_frames > 0 and self.processor.processed >= self.max_frames


class Engines(Protocol):
    """Where scheduler workers get their engine: the worker pool, which may swap them."""

    @property
    def slots(self) -> int: ...
    def engine(self, slot: int) -> InferenceEngine | None: ...
    def lost(self, engine: InferenceEngine, reason: str) -> None: ...


@dataclass
class Scheduler:
    """Worker threads, one per engine slot, taking frames round-robin from the streams.

    A slot whose engine is down (its process restarting) takes no frames: live
    sources drop theirs meanwhile (counted), files wait.
    """

    streams: list[StreamState]
    engines: Engines
    cond: threading.Condition
    stop: threading.Event
    on_result: Callable[[FrameResult], None]
    on_stream_done: Callable[[str], None]
    paused: threading.Event = field(default_factory=threading.Event)
    _next: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for slot in range(self.engines.slots):
            t = threading.Thread(target=self._work, args=(slot,), name=f"infer-{slot}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def source_ended(self, name: str) -> None:
        with self.cond:
            for s in self.streams:
                if s.processor.name == name:
                    s.source_ended = True
            self._retire()
            self.cond.notify_all()

    def wait_done(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: all(s.done for s in self.streams), timeout)

    def join(self, timeout: float) -> None:
        with self.cond:
            self.cond.notify_all()
        for t in self._threads:
            t.join(timeout)

    def _retire(self) -> None:
        """Mark streams finished: limit reached, or source ended with nothing left."""
        for s in self.streams:
            if s.done or s.busy:
                continue
            if s.limit_reached or (s.source_ended and not len(s.slot)):
                s.done = True
                s.slot.frames.clear()
                self.on_stream_done(s.processor.name)

    def _pick(self) -> tuple[StreamState, Frame] | None:
        """Round-robin over streams that are idle and have a frame; caller holds cond."""
        n = len(self.streams)
        if self.paused.is_set():
            return None
        for k in range(n):
            s = self.streams[(self._next + k) % n]
            if s.done or s.busy:
                continue
            frame = s.slot.take()
            if frame is not None:
                self._next = (self._next + k + 1) % n
                s.busy = True
                if s.began is None:
                    s.began = time.monotonic()
                return s, frame
        return None

    def _work(self, slot: int) -> None:
        while not self.stop.is_set():
            engine = self.engines.engine(slot)
            with self.cond:
                picked = self._pick() if engine is not None else None
                if picked is None:
                    self._retire()
                    if all(s.done for s in self.streams):
                        self.cond.notify_all()
                        return
                    self.cond.wait(POLL_S)
                    continue
            assert engine is not None
            state, frame = picked
            result = self._process(state, frame, engine)
            if result is not None:
                state.consecutive_errors = 0
                self.on_result(result)
            with self.cond:
                state.busy = False
                state.last_done = time.monotonic()
                self._retire()
                self.cond.notify_all()

    def _process(
        self, state: StreamState, frame: Frame, engine: InferenceEngine
    ) -> FrameResult | None:
        """The frame's result, or None when it failed (counted, logged, never silent)."""
        try:
            return state.processor.process(frame, engine)
        except (WorkerDownError, RequestError) as exc:
            self._failed(state, f"inference: {exc}")
            log.warning("%s: frame %d lost: inference worker %s: %s", state.processor.name,
                        frame.index, engine.client.name, exc)
            self.engines.lost(engine, str(exc))
        except Exception as exc:
            self._failed(state, f"{type(exc).__name__}: {exc}")
            log.exception("%s: frame %d failed and was skipped", state.processor.name,
                          frame.index)
        return None

    @staticmethod
    def _failed(state: StreamState, why: str) -> None:
        state.errors += 1
        state.consecutive_errors += 1
        state.last_error = why[:120]
