"""What the OPC UA and Modbus servers share: their own thread and event loop, fed by the
output thread without ever making it wait, the reject signal and its measured latency,
and faults reported in one line.

The output thread only hands over: the newest status (a reference, replaced), and the
events that matter to a PLC (a bounded queue; what does not fit is counted as dropped).
The server's loop wakes at once, applies them and writes the values that changed, so a
reject reaches the PLC within a loop turn of its frame being processed; the time from
the frame's capture to the reject signal being set is measured and kept as a histogram.

A server that cannot listen (its port in use) logs one line, counts as a failing output
(the HUD, ``/api/status``, ``/metrics`` and the summary say so) and tries again every
few seconds; inspection never waits for it. A client that misbehaves costs one log line
(at most one each few seconds, the rest counted), never a traceback.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import queue
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from coral_mfg.core.events import (
    CameraBlind,
    CameraRestored,
    Event,
    Graded,
    KeepoutEnter,
    LineCrossed,
    PresenceMissing,
    PresenceRestored,
    ZoneDwellExceeded,
)
from coral_mfg.core.results import FrameResult
from coral_mfg.core.status import RunStatus
from coral_mfg.outputs.base import SinkBase
from coral_mfg.outputs.health import OutputHealth, os_reason
from coral_mfg.outputs.plc_map import Baseline, PlcState, Point, StationLayout, points

log = logging.getLogger(__name__)

#: Deliveries waiting for the server's loop; more are dropped (counted).
INBOX = 256
RETRY_S = 5.0
#: A status older than this is no status: the station has stopped reporting (hung), so
#: the heartbeat stops and every camera reads blind.
STALE_S = 3.0
HEARTBEAT_S = 1.0
JOIN_S = 3.0
#: At most one log line per client fault in this long; the others are counted.
FAULT_LINE_S = 10.0
#: Capture-to-reject latency buckets, seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
LATENCY_SAMPLES = 2000

#: The events a PLC hears of (OPC UA events; the last grade).
PLC_EVENTS = (KeepoutEnter, ZoneDwellExceeded, Graded, PresenceMissing, PresenceRestored,
              CameraBlind, CameraRestored)


@dataclass(frozen=True)
class Reject:
    """An object to kick off the belt: its camera, track and verdict, and when the frame
    that decided it was captured (monotonic)."""

    camera: str
    track: int
    grade: str | None
    captured: float
    line: str | None = None


@dataclass(frozen=True)
class Delivery:
    events: tuple[Event, ...]
    rejects: tuple[Reject, ...] = ()


def rejects_of(layout: StationLayout, result: FrameResult) -> tuple[Reject, ...]:
    """The rejects a frame decides: a failing object crossing the camera's reject line in
    its first direction, or, with no line, a failing verdict settling."""
    camera = next((c for c in layout.cameras if c.name == result.stream), None)
    if camera is None or not camera.reject:
        return ()
    out = []
    for e in result.events:
        if camera.reject_line is not None and isinstance(e, LineCrossed):
            directions = dict(camera.lines).get(camera.reject_line)
            if (e.line == camera.reject_line and e.passed is False and directions is not None
                    and e.direction == directions[0]):
                out.append(Reject(camera.name, e.track, e.grade, result.frame.captured, e.line))
        elif camera.reject_line is None and isinstance(e, Graded) and not e.passed:
            out.append(Reject(camera.name, e.track, e.grade, result.frame.captured))
    return tuple(out)


class LatencyRecord:
    """Capture-to-reject latency per camera: a histogram, and the recent samples for its
    percentiles."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, list[int]] = {}
        self._sum: dict[str, float] = {}
        self._samples: dict[str, deque[float]] = {}

    def observe(self, camera: str, seconds: float) -> None:
        with self._lock:
            buckets = self._buckets.setdefault(camera, [0] * (len(LATENCY_BUCKETS) + 1))
            buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._sum[camera] = self._sum.get(camera, 0.0) + seconds
            self._samples.setdefault(camera, deque(maxlen=LATENCY_SAMPLES)).append(seconds)

    def record(self) -> dict[str, Any]:
        """Per camera: count, sum, cumulative buckets ``[[le, n], ...]`` and the median,
        p99 and maximum of the recent samples, in milliseconds."""
        with self._lock:
            out = {}
            for camera, buckets in self._buckets.items():
                cumulative, total = [], 0
                for le, n in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
                    total += n
                    cumulative.append([le, total])
                samples = sorted(self._samples[camera])
                out[camera] = {
                    "count": total, "sum_s": round(self._sum[camera], 6),
                    "buckets": cumulative,
                    "p50_ms": round(1000 * _quantile(samples, 0.5), 2),
                    "p99_ms": round(1000 * _quantile(samples, 0.99), 2),
                    "max_ms": round(1000 * samples[-1], 2),
                }
            return out


def _quantile(ordered: list[float], q: float) -> float:
    """The sample at rank ``ceil(q * n)`` (nearest rank): a p99 is a latency seen."""
    rank = max(1, -(-int(q * 1000) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


class ClientFaults(logging.Handler):
    """A server library's complaints about a client (a malformed message, a refused
    request, a connection it had to drop) as one line each, at most one every
    :data:`FAULT_LINE_S`, the rest counted; never a traceback. ``per_client``: the
    library's modules that handle one connection, whose warnings are about a client;
    elsewhere only its errors count."""

    def __init__(self, output: str, per_client: tuple[str, ...] = ()) -> None:
        super().__init__(logging.DEBUG)
        self.output = output
        self.per_client = per_client
        self.count = 0
        self._shown_at = -1e9
        self._hidden = 0
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        fault = record.levelno >= logging.ERROR or (
            record.levelno >= logging.WARNING and record.name.startswith(self.per_client))
        try:
            text = record.getMessage().strip().splitlines()
        except (TypeError, ValueError):  # a library's own badly formed message
            text = [str(record.msg)]
        words = (text[0] if text else record.name)[:200]
        if not fault:
            log.debug("%s: %s: %s", self.output, record.name, words)
            return
        if record.exc_info and record.exc_info[1] is not None:
            words += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"[:200]
        now = time.monotonic()
        with self._guard:
            self.count += 1
            if now - self._shown_at < FAULT_LINE_S:
                self._hidden += 1
                return
            hidden, self._hidden, self._shown_at = self._hidden, 0, now
        more = f"; {hidden} more since the last line" if hidden else ""
        log.warning("%s: a client's request failed: %s%s; inspection goes on", self.output,
                    words, more)


def try_bind(host: str, port: int) -> None:
    """Raise the OSError that says why the port cannot be had (in use, not ours), before
    a server library tries: the libraries log their own error and say less."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def quiet(logger_name: str, faults: ClientFaults) -> None:
    """A library's records go to ``faults`` alone, never to the run's log as they are: its
    own chatter (its defaults, per-request notes) only when debugging, its complaints
    about clients as ``faults`` says them."""
    logger = logging.getLogger(logger_name)
    debugging = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    logger.setLevel(logging.DEBUG if debugging else logging.WARNING)
    for old in [h for h in logger.handlers if isinstance(h, ClientFaults)]:
        logger.removeHandler(old)
    logger.addHandler(faults)
    logger.propagate = False


class PlcServer(SinkBase):
    """A server for PLCs on its own thread and event loop; see the module's docstring.
    Subclasses open and close the server and write the values that changed."""

    kind: ClassVar[str] = ""
    #: The server library's modules that serve one client (see :class:`ClientFaults`).
    per_client: ClassVar[tuple[str, ...]] = ()

    def __init__(self, layout: StationLayout, baseline: Baseline, where: str) -> None:
        self.layout = layout
        self.where = where
        self.points: list[Point] = points(layout)
        self.health = OutputHealth(self.kind)
        self.state = PlcState(layout, baseline)
        self.latency = LatencyRecord()
        self.faults = ClientFaults(self.kind, self.per_client)
        self.listening = False
        self.rejects = 0
        self._inbox: queue.Queue[Delivery] = queue.Queue(INBOX)
        self._status: RunStatus | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._written: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, name=f"plc-{self.kind}",
                                        daemon=True)

    # --- the output thread: hand over, never wait -----------------------------------------

    def start(self) -> None:
        self._thread.start()

    def status(self, status: RunStatus) -> None:
        self._status = status
        self._poke()

    def write(self, result: FrameResult) -> None:
        if not result.events:
            return
        events = tuple(e for e in result.events if isinstance(e, PLC_EVENTS))
        rejects = rejects_of(self.layout, result)
        if events or rejects:
            self._put(Delivery(events, rejects))

    def event(self, event: Event) -> None:
        if isinstance(event, PLC_EVENTS):
            self._put(Delivery((event,)))

    def _put(self, delivery: Delivery) -> None:
        try:
            self._inbox.put_nowait(delivery)
        except queue.Full:
            self.health.drop()
            return
        self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: the run is ending
            loop.call_soon_threadsafe(wake.set)

    def close(self) -> None:
        self._stopping.set()
        self._poke()
        if self._thread.ident is not None:
            self._thread.join(JOIN_S)

    def counts(self) -> dict[str, Any]:
        c = self.health.counts()
        return {"listening": self.listening, "written": c["written"], "dropped": c["dropped"],
                "lost": c["lost"], "rejects": self.rejects, "client_errors": self.faults.count,
                "error": c["error"], "reject_latency": self.latency.record(), **self.own_counts()}

    def own_counts(self) -> dict[str, Any]:
        return {}

    # --- the server's thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # a bug here must not pass unnoticed, nor stop inspection
            log.exception("%s: the server stopped", self.kind)
            self.health.failed(f"the server stopped ({type(exc).__name__}: {exc})", lost=0)

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                await self.open()
            except (OSError, RuntimeError) as exc:
                await self.shut()
                self.health.failed(f"cannot listen on {self.where} ({os_reason(exc)}); "
                                   f"trying again every {RETRY_S:g} s", lost=0)
                await self._sleep(RETRY_S)
                continue
            self.listening = True
            log.info("%s: serving %d values on %s", self.kind, len(self.points), self.where)
            self.health.wrote(0)
            try:
                await self._serve()
            finally:
                self.listening = False
                await self.shut()
        self._loop = None

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        end = time.monotonic() + seconds
        while not self._stopping.is_set() and time.monotonic() < end:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), end - time.monotonic())
            except TimeoutError:
                return

    async def _serve(self) -> None:
        assert self._wake is not None
        beat = time.monotonic() + HEARTBEAT_S
        self._written.clear()
        while not self._stopping.is_set():
            now = time.monotonic()
            deadline = min(beat, self.state.next_pulse_end(now) or beat)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, deadline - now))
            self._wake.clear()
            now = time.monotonic()
            status = self._status
            if status is not None and status is not self.state.status:
                self.state.status, self.state.status_at = status, now
            events, fresh = self._take(now)
            if now >= beat:
                if now - self.state.status_at <= STALE_S:
                    self.state.heartbeat += 1
                beat = max(beat + HEARTBEAT_S, now)
            await self._write(self.state.values(now, STALE_S))
            done = time.monotonic()
            for r in fresh:
                self.latency.observe(r.camera, done - r.captured)
            if events or fresh:
                await self.announce(events, fresh, done)

    def _take(self, now: float) -> tuple[list[Event], list[Reject]]:
        events: list[Event] = []
        fresh: list[Reject] = []
        while True:
            try:
                delivery = self._inbox.get_nowait()
            except queue.Empty:
                return events, fresh
            for e in delivery.events:
                if isinstance(e, Graded):
                    self.state.graded(e.stream, e.grade, e.passed)
                events.append(e)
            for r in delivery.rejects:
                self.state.rejected(r.camera, now)
                self.rejects += 1
                fresh.append(r)

    async def _write(self, values: dict[str, Any]) -> None:
        changed = [(p, values[p.name]) for p in self.points
                   if self._written.get(p.name, _UNSET) != values[p.name]]
        if not changed:
            return
        await self.put_values(changed)
        for p, v in changed:
            self._written[p.name] = v
        self.health.wrote(len(changed))

    # --- what each server does -----------------------------------------------------------

    async def open(self) -> None:
        """Make the server and listen; OSError or RuntimeError when it cannot."""
        raise NotImplementedError

    async def shut(self) -> None:
        """Stop listening and drop every client (also after a failed open)."""
        raise NotImplementedError

    async def put_values(self, changed: list[tuple[Point, Any]]) -> None:
        raise NotImplementedError

    async def announce(self, events: list[Event], rejects: list[Reject], at: float) -> None:
        """Events for the clients that listen for them (OPC UA); ``at``: when the values
        were written (monotonic), for the rejects' latency."""


_UNSET = object()
