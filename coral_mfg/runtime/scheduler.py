"""The scheduler: shares the inference processes fairly between the streams.

Scheduler threads (one per lane slot: two per inference process, so the next
request is ready the moment a process answers) take frames round-robin from the
streams. Each frame is done in two steps: inference, which may run for two
frames of one stream at once, and the stream's own bookkeeping (tracking,
zones, votes, events), which takes the frames strictly in the order they were
taken. So a process never waits while the application finishes the frame
before, and every stream stays in order for its tracker and the event log.
Every wait is bounded and watches the stop event.

Only idle scheduler threads wait on the shared condition, and each change wakes
as few threads as can use it (one for a frame put or a frame finished); a frame
waiting for its turn and the caller waiting for the end wait on events of their
own. On a busy station the wake-ups are what the pipeline's threads would
otherwise spend their CPU on, and that CPU is taken from inference.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from coral_mfg.capture.sources import FrameSlot
from coral_mfg.core.clock import POLL_S
from coral_mfg.core.frame import Frame
from coral_mfg.core.results import FrameResult, Inferred
from coral_mfg.core.threads import as_batch_work
from coral_mfg.inference.errors import ProcessDownError, RequestError
from coral_mfg.inference.lane import InferenceLane

log = logging.getLogger(__name__)

ERROR_STATE_AFTER = 5
#: Frames of one stream whose inference may run at once.
IN_FLIGHT = 2


class StreamProcessor(Protocol):
    """A stream's own work on a frame: ``infer`` may overlap, ``finish`` runs in order."""

    name: str
    processed: int

    def infer(self, frame: Frame, lane: InferenceLane) -> Inferred: ...
    def finish(self, frame: Frame, inferred: Inferred) -> FrameResult: ...


@dataclass
class StreamState:
    """One stream as the scheduler sees it: its frames, its progress and its errors."""

    processor: StreamProcessor
    slot: FrameSlot
    max_frames: int = 0
    source_ended: bool = False
    in_flight: int = 0
    taken: int = 0  # frames taken so far: the next one's turn number
    finished: int = 0  # frames finished (or failed) so far: whose turn it is
    done: bool = False
    errors: int = 0
    consecutive_errors: int = 0
    last_error: str = ""
    began: float | None = None  # when its first frame was taken
    last_done: float = 0.0  # when its last frame was finished
    #: set when a frame of this stream is finished: the next one's turn may have come
    turn_moved: threading.Event = field(default_factory=threading.Event)

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

    @property
    def can_take(self) -> bool:
        """Another frame may start: under the in-flight bound, and not past --max_frames."""
        if self.done or self.in_flight >= IN_FLIGHT:
            return False
        return self.max_frames <= 0 or self.processor.processed + self.in_flight < self.max_frames


class Lanes(Protocol):
    """Where scheduler threads get their lane: the process pool, which may swap them."""

    @property
    def slots(self) -> int: ...
    def lane(self, slot: int) -> InferenceLane | None: ...
    def lost(self, lane: InferenceLane, reason: str) -> None: ...


@dataclass
class _Job:
    state: StreamState
    frame: Frame
    turn: int


@dataclass
class Scheduler:
    """Threads, one per lane slot, taking frames round-robin from the streams.

    A slot whose lane is down (its process restarting) takes no frames: live
    sources drop theirs meanwhile (counted), files wait.
    """

    streams: list[StreamState]
    lanes: Lanes
    cond: threading.Condition
    stop: threading.Event
    on_result: Callable[[FrameResult], None]
    on_stream_done: Callable[[str], None]
    paused: threading.Event = field(default_factory=threading.Event)
    _next: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)
    _all_done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        for slot in range(self.lanes.slots):
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
            if all(s.done for s in self.streams):
                return True
        return self._all_done.wait(timeout)

    def join(self, timeout: float) -> None:
        with self.cond:
            self.cond.notify_all()
            for s in self.streams:
                s.turn_moved.set()
        for t in self._threads:
            t.join(timeout)

    def _retire(self) -> None:
        """Mark streams finished: limit reached, or source ended with nothing left;
        caller holds cond."""
        retired = False
        for s in self.streams:
            if s.done or s.in_flight:
                continue
            if s.limit_reached or (s.source_ended and not len(s.slot)):
                s.done = retired = True
                s.slot.discard()
                self.on_stream_done(s.processor.name)
        if retired:
            self.cond.notify_all()  # idle threads may be done too
            if all(s.done for s in self.streams):
                self._all_done.set()

    def _pick(self) -> _Job | None:
        """Round-robin over streams that may take a frame and have one; caller holds cond."""
        n = len(self.streams)
        if self.paused.is_set():
            return None
        for k in range(n):
            s = self.streams[(self._next + k) % n]
            if not s.can_take:
                continue
            frame = s.slot.take()
            if frame is not None:
                self._next = (self._next + k + 1) % n
                s.in_flight += 1
                s.taken += 1
                if s.began is None:
                    s.began = time.monotonic()
                return _Job(s, frame, s.taken - 1)
        return None

    def _work(self, slot: int) -> None:
        as_batch_work()
        while not self.stop.is_set():
            lane = self.lanes.lane(slot)
            with self.cond:
                job = self._pick() if lane is not None else None
                if job is None:
                    self._retire()
                    if all(s.done for s in self.streams):
                        return
                    self.cond.wait(POLL_S)
                    continue
            assert lane is not None
            inferred = self._infer(job, lane)
            if not self._await_turn(job):
                return  # stopping: the frame is abandoned with the run
            result = self._finish(job, inferred) if inferred is not None else None
            if result is not None:
                self.on_result(result)
            with self.cond:
                state = job.state
                if result is not None:
                    state.consecutive_errors = 0
                state.finished += 1
                state.in_flight -= 1
                state.last_done = time.monotonic()
                state.turn_moved.set()
                self._retire()
                self.cond.notify()  # the stream may take another frame now

    def _await_turn(self, job: _Job) -> bool:
        """Wait until every frame taken before this one is finished; False when stopping."""
        state = job.state
        while True:
            with self.cond:
                if state.finished == job.turn:
                    return True
                state.turn_moved.clear()  # under cond: a finish after this sets it again
            if self.stop.is_set():
                return False
            state.turn_moved.wait(POLL_S)

    def _infer(self, job: _Job, lane: InferenceLane) -> Inferred | None:
        """The models' answer for the frame, or None when it failed (counted, logged)."""
        state = job.state
        try:
            return state.processor.infer(job.frame, lane)
        except (ProcessDownError, RequestError) as exc:
            if self.stop.is_set():
                return None  # the run is ending: its processes were stopped under this frame
            self._failed(state, f"inference: {exc}")
            log.warning("%s: frame %d lost: inference process %s: %s", state.processor.name,
                        job.frame.index, lane.client.name, exc)
            self.lanes.lost(lane, str(exc))
        except Exception as exc:
            self._failed(state, f"{type(exc).__name__}: {exc}")
            log.exception("%s: frame %d failed and was skipped", state.processor.name,
                          job.frame.index)
        return None

    def _finish(self, job: _Job, inferred: Inferred) -> FrameResult | None:
        try:
            return job.state.processor.finish(job.frame, inferred)
        except Exception as exc:
            self._failed(job.state, f"{type(exc).__name__}: {exc}")
            log.exception("%s: frame %d failed and was skipped", job.state.processor.name,
                          job.frame.index)
        return None

    def _failed(self, state: StreamState, why: str) -> None:
        with self.cond:
            state.errors += 1
            state.consecutive_errors += 1
            state.last_error = why[:120]
