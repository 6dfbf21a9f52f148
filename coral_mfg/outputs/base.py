"""What flows to the outputs, and the one thread that hands it to each of them.

Sinks (the event log, the recording, the window, ...) are fed in order from a
bounded queue, so drawing and writing never hold up inference, and every sink
is closed on every exit path.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from coral_mfg.core.clock import POLL_S
from coral_mfg.core.events import Event
from coral_mfg.core.results import FrameResult, SnapshotRequest
from coral_mfg.core.status import RunStatus
from coral_mfg.core.threads import as_batch_work

log = logging.getLogger(__name__)

QUEUE_SIZE = 64


@dataclass(frozen=True)
class StreamEnded:
    """A stream will send no more frames: the recorder stops waiting for its pane."""

    stream: str


@dataclass(frozen=True)
class RunEvent:
    """An event no frame carries (a source lost, zones reloaded, a final verdict).

    It travels through the output queue so the event log keeps it in order with the frames.
    ``pictures`` are the snapshots it names, each with the result it shows.
    """

    event: Event
    pictures: tuple[SnapshotRequest, ...] = ()


OutputItem = FrameResult | StreamEnded | RunEvent | RunStatus


class Sink(Protocol):
    """An output fed by the output thread: it must never block for long.

    Made without side effects; ``start`` opens connections and starts threads,
    ``close`` ends them (on every exit path, once).
    """

    def start(self) -> None: ...
    def write(self, result: FrameResult) -> None: ...
    def event(self, event: Event) -> None: ...
    def pictures(self, requests: tuple[SnapshotRequest, ...]) -> None: ...
    def status(self, status: RunStatus) -> None: ...
    def end_stream(self, stream: str) -> None: ...
    def close(self) -> None: ...


class SinkBase:
    """A sink that ignores what it does not need."""

    def start(self) -> None:
        pass

    def write(self, result: FrameResult) -> None:
        pass

    def status(self, status: RunStatus) -> None:
        pass

    def event(self, event: Event) -> None:
        pass

    def pictures(self, requests: tuple[SnapshotRequest, ...]) -> None:
        pass

    def end_stream(self, stream: str) -> None:
        pass

    def close(self) -> None:
        pass


class OutputThread(threading.Thread):
    """Feeds results to the sinks; ``put`` waits for room only while not stopping."""

    def __init__(self, sinks: list[Sink], stop: threading.Event) -> None:
        super().__init__(name="outputs", daemon=True)
        self.sinks = sinks
        self.stop_event = stop
        self.queue: queue.Queue[OutputItem] = queue.Queue(QUEUE_SIZE)
        self._done = threading.Event()
        self.failures: dict[str, int] = {}

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
        as_batch_work()
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
                    self._sink_failed(sink)
            if isinstance(item, FrameResult):
                item.times.output = (time.perf_counter() - start) * 1000.0


    def _sink_failed(self, sink: Sink) -> None:
        """A bug in a sink: its first traceback is logged, later ones only counted."""
        name = type(sink).__name__
        self.failures[name] = self.failures.get(name, 0) + 1
        if self.failures[name] == 1:
            log.exception("output %s failed (later failures are counted in the summary)", name)


def _deliver(sink: Sink, item: OutputItem) -> None:
    match item:
        case StreamEnded(stream):
            sink.end_stream(stream)
        case RunEvent(event, pictures):
            sink.event(event)
            if pictures:
                sink.pictures(pictures)
        case RunStatus():
            sink.status(item)
        case _:
            sink.write(item)
