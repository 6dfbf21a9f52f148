"""The run's inference processes, kept alive, and which of them takes each request.

A process that dies or hangs is restarted with backoff (1, 2, 4 ... 30 s) while
the others of its set keep serving: with several Edge TPUs, one per process, a
lost device costs its share of the capacity, nothing more. With ``--device
auto``, the Edge TPUs hand over to the CPU processes only when every one of
them keeps failing (3 failures within 2 minutes each, none answering); they
are then tried again every half minute, and take over again as soon as any
answers. Every change is logged and reported as a run event
(``accelerator_lost``, ``accelerator_restored``, ``accelerator_fallback``) and
counted for the summary.

Each request goes to a free lane of the process that will answer it soonest,
chosen when the request is made (see :class:`_SlotLane`), so a busy or slow
device is not handed frames another would serve sooner.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from coral_mfg.core.backoff import Backoff
from coral_mfg.core.detections import Detections
from coral_mfg.core.events import (
    AcceleratorFallback,
    AcceleratorLost,
    AcceleratorRestored,
    EventSink,
    Stamper,
)
from coral_mfg.core.results import StageTimes
from coral_mfg.inference.client import ProcessClient, ProcessState, Work
from coral_mfg.inference.errors import ProcessDownError, ProcessStartError
from coral_mfg.inference.lane import InferenceLane
from coral_mfg.inference.plan import Labels
from coral_mfg.inference.protocol import LANES, InputArena, ProcessConfig
from coral_mfg.inference.runtime import Device

log = logging.getLogger(__name__)

#: Failures of one Edge TPU within this window that count it as failing; an auto run
#: falls back to the CPU when every Edge TPU of the set is failing.
FALLBACK_AFTER = 3
FALLBACK_WINDOW_S = 120.0
TICK_S = 0.2
STOP_GRACE_S = 0.5
#: The busy share is measured over this many seconds of wall time ...
LOAD_WINDOW_S = 5.0
#: ... the median and the capacity over this many recent frames.
LOAD_FRAMES = 200
#: Processes whose expected answer times are within this factor count as equally soon;
#: the one given a request longest ago then takes it, so equal devices share the work.
EVEN = 1.25
#: A process given no request for this long gets the next (see ProcessPool._soonest).
PROBE_S = 1.0

#: Makes a process's config right for its next start: which index names its Edge TPU
#: now (see startup). Raises ProcessStartError when the device cannot be used.
Prepare = Callable[[ProcessConfig], ProcessConfig]


@dataclass(frozen=True)
class ProcessSet:
    """The processes of one device kind: one per Edge TPU, or one per CPU interpreter pair.

    ``names`` says which device each process drives (``usb:1``; ``cpu``), for the
    events and the load figures. ``serial`` starts the processes one after
    another: a USB Coral re-enumerates when its firmware is loaded, which
    renumbers the others, so each is told its index (``prepare``) only once the
    ones before it are open.
    """

    device: Device
    configs: tuple[ProcessConfig, ...]
    describe: str  # for the log: models and where they run
    names: tuple[str, ...] = ()
    serial: bool = False
    prepare: Prepare | None = None

    def name(self, index: int) -> str:
        return self.names[index] if index < len(self.names) else self.device.value


@dataclass(frozen=True)
class ProcessLoad:
    """How loaded one inference process is, for the status, the metrics and the bench.

    ``median_ms`` is the median time the process spent on a frame's detection
    over the last :data:`LOAD_FRAMES` frames (its own ``busy_s``: the models and
    the copy of their inputs, not the trip to it). ``busy_share`` is the share of
    the last :data:`LOAD_WINDOW_S` seconds it spent working (0 to 1).
    ``capacity_fps`` is the frames per second it could take at the work this
    station's frames gave it: frames over all the time it spent on them,
    detection and grading their crops alike, over the same recent frames. The
    mean, not the median, because costs add up: a frame with many crops costs
    what it costs, and a median per frame would leave the grading out. 0 until
    it served a frame.
    """

    process: str  # "edgetpu-0"
    device: str  # "usb:0", "pci:0", "edgetpu" (any), "cpu"
    state: ProcessState
    median_ms: float
    busy_share: float
    capacity_fps: float


def process_load(process: str, device: str, state: ProcessState, work: Sequence[Work], *,
                 first_up: float | None, now: float,
                 window: float = LOAD_WINDOW_S) -> ProcessLoad:
    """The load figures of one process from its recent work (see :class:`ProcessLoad`).

    The busy share counts the part of each request that falls in the window; a
    process up for less than the window is measured over the time it was up.
    """
    start = now - window if first_up is None else max(now - window, first_up)
    span = now - start
    busy = 0.0
    for w in reversed(work):
        if w.end <= start:
            break
        busy += w.end - max(w.end - w.busy_s, start)
    share = min(1.0, max(0.0, busy / span)) if span > 0 else 0.0
    frames: list[float] = []
    spent = 0.0
    for w in reversed(work):
        spent += w.busy_s
        if w.frame:
            frames.append(w.busy_s)
            if len(frames) >= LOAD_FRAMES:
                break
    median = statistics.median(frames) * 1000.0 if frames else 0.0
    capacity = len(frames) / spent if frames and spent > 0 else 0.0
    return ProcessLoad(process, device, state, median, share, capacity)


@dataclass(eq=False)
class _Member:
    """One process of a set: its lanes, its device, its restart schedule, its failures."""

    lanes: tuple[InferenceLane, ...]
    name: str  # the device it drives: "usb:1", "cpu"
    prepare: Prepare | None = None
    retry_at: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)
    lost_generation: int = 0  # the process already reported lost
    strikes: deque[float] = field(default_factory=deque)  # when it failed, recent ones
    taken: set[int] = field(default_factory=set)  # lanes a request is using now
    given: int = 0  # when it was last given a request (a count of requests given)
    given_at: float = 0.0  # and when, monotonic

    @property
    def client(self) -> ProcessClient:
        return self.lanes[0].client

    @property
    def device(self) -> Device:
        return self.lanes[0].device

    @property
    def up(self) -> bool:
        return self.client.state is ProcessState.UP

    @property
    def edgetpu(self) -> str | None:
        """The Edge TPU it drives (``usb:1``), for the events; None for a CPU process, or
        one told to take whichever Edge TPU libedgetpu finds first."""
        known = self.device is Device.EDGETPU and self.name != Device.EDGETPU.value
        return self.name if known else None

    def strike(self, now: float) -> None:
        self.strikes.append(now)
        self.forget(now)

    def forget(self, now: float) -> None:
        while self.strikes and now - self.strikes[0] > FALLBACK_WINDOW_S:
            self.strikes.popleft()

    def failing(self, now: float) -> bool:
        """Down, and failed often enough lately to be given up on."""
        self.forget(now)
        return not self.up and len(self.strikes) >= FALLBACK_AFTER


@dataclass(frozen=True)
class _Taken:
    member: _Member
    index: int

    @property
    def lane(self) -> InferenceLane:
        return self.member.lanes[self.index]


@dataclass
class PoolCounts:
    """What happened to the processes, for the summary."""

    lost: int = 0
    restored: int = 0
    fallback: int = 0
    failed_frames: int = 0


class _SlotLane(InferenceLane):
    """What a scheduler slot is given: each call goes to a free lane of the process the
    pool chooses when the call is made, not when the slot took its frame.

    Choosing late matters with several processes: a slot that took a frame while
    its own process was busy would otherwise queue it there while another sat
    idle. A frame's crops go to the process that detected it while it has a free
    lane. Only the slot's own thread uses it; its attributes name the lane of
    the last call (the scheduler logs ``client.name`` and reports losses with it).
    """

    def __init__(self, pool: ProcessPool, home: InferenceLane) -> None:
        super().__init__(home.client, home.arena, home.lane, home.device, home.labels)
        self._pool = pool
        self._detected_on: _Member | None = None

    def _use(self, taken: _Taken) -> InferenceLane:
        lane = taken.lane
        self.client, self.arena, self.lane, self.device = (lane.client, lane.arena, lane.lane,
                                                           lane.device)
        return lane

    def detect(self, frame: npt.NDArray[np.uint8], times: StageTimes | None = None) -> Detections:
        taken = self._pool.take(None)
        self._detected_on = taken.member
        try:
            return self._use(taken).detect(frame, times)
        finally:
            self._pool.give_back(taken)

    def crop_outputs(
        self, frame: npt.NDArray[np.uint8], rois: list[tuple[int, int, int, int]],
        models: tuple[int, ...], times: StageTimes | None = None,
    ) -> tuple[npt.NDArray[np.float32], ...]:
        taken = self._pool.take(self._detected_on)
        try:
            return self._use(taken).crop_outputs(frame, rois, models, times)
        finally:
            self._pool.give_back(taken)


class ProcessPool:
    """Which lanes the scheduler may use now, and the thread that keeps them alive."""

    def __init__(
        self, primary: ProcessSet, fallback: ProcessSet | None, labels: Labels, *,
        timeout: float, on_event: EventSink, stamper: Stamper, retry_s: float = 30.0,
    ) -> None:
        self.retry_s = retry_s
        self.timeout = timeout
        self.sets = {"primary": primary, "fallback": fallback}
        self.members = {
            name: [self._member(c, s, i, labels, timeout) for i, c in enumerate(s.configs)]
            for name, s in self.sets.items() if s is not None}
        self.active = "primary"
        self.on_event = on_event
        self.stamper = stamper
        self.counts = PoolCounts()
        #: the processes of the primary set that did not start with the others, and why
        #: (they are retried like lost ones), by their index in the set
        self.start_failures: list[tuple[int, ProcessStartError]] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        #: the lanes taken, the failures and the losses: changed by the scheduler's
        #: threads and the supervisor
        self._cond = threading.Condition()
        self._given = 0
        self._probe_at = 0.0
        self._thread = threading.Thread(target=self._supervise, name="inference-pool",
                                         daemon=True)
        homes = self.members["primary"]
        self._slots = [_SlotLane(self, homes[s % len(homes)].lanes[(s // len(homes)) % LANES])
                       for s in range(self.slots)]

    @staticmethod
    def _member(config: ProcessConfig, s: ProcessSet, index: int, labels: Labels,
                timeout: float) -> _Member:
        arena = InputArena.create(config.detector.input_size, config.crop_size)
        client = ProcessClient(replace(config, arena=arena.name), arena, timeout)
        lanes = tuple(InferenceLane(client, arena, lane, s.device, labels)
                      for lane in range(LANES))
        return _Member(lanes, s.name(index), s.prepare)

    # --- what the scheduler sees ----------------------------------------------------------

    @property
    def slots(self) -> int:
        """Scheduler threads to run: a lane of every process of the largest set."""
        return LANES * max(len(m) for m in self.members.values())

    @property
    def device(self) -> Device:
        active = self.sets[self.active]
        assert active is not None
        return active.device

    @property
    def fallen_back(self) -> bool:
        return self.active == "fallback"

    def lane(self, slot: int) -> InferenceLane | None:
        """The lane a scheduler thread may use now, or None: as many slots take frames as
        the processes up have lanes."""
        up = sum(1 for m in self.members[self.active] if m.up)
        return self._slots[slot] if slot < LANES * up else None

    def take(self, prefer: _Member | None) -> _Taken:
        """A free lane of the process that should answer soonest (``prefer`` if it is up and
        has one), taken until :meth:`give_back`. Waits for one at most the inference
        timeout; ProcessDownError when no process is up."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while True:
                if self._stop.is_set():
                    raise ProcessDownError("stopping")
                members = [m for m in self.members[self.active] if m.up]
                if not members:
                    raise ProcessDownError(f"no {self.device.value} inference process is up")
                free = [m for m in members if len(m.taken) < LANES]
                if free:
                    now = time.monotonic()
                    member = prefer if prefer in free else self._soonest(free, now)
                    index = next(i for i in range(LANES) if i not in member.taken)
                    member.taken.add(index)
                    self._given += 1
                    member.given, member.given_at = self._given, now
                    return _Taken(member, index)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProcessDownError(f"no inference lane free within {self.timeout:g} s")
                self._cond.wait(left)

    @staticmethod
    def _soonest(free: list[_Member], now: float) -> _Member:
        """The process whose answer to one more request comes soonest: its requests in
        hand plus this one, times its time per request. A process that has not run yet
        is taken to be as quick as the quickest; among those about as soon, the one
        given a request longest ago. A process given none for :data:`PROBE_S` gets this
        one whatever its estimate: an estimate from a slow first call is corrected, and
        a process that hung while idle is found out (its request times out) instead of
        being passed over while the others keep up."""
        idle = [m for m in free if now - m.given_at >= PROBE_S]
        if idle:
            return min(idle, key=lambda m: m.given)
        known = [m.client.call_s for m in free if m.client.call_s > 0]
        quickest = min(known) if known else 1.0

        def expected(m: _Member) -> float:
            return (len(m.taken) + 1) * (m.client.call_s or quickest)

        best = min(expected(m) for m in free)
        return min((m for m in free if expected(m) <= best * EVEN), key=lambda m: m.given)

    def give_back(self, taken: _Taken) -> None:
        with self._cond:
            taken.member.taken.discard(taken.index)
            self._cond.notify_all()

    def clients(self) -> list[ProcessClient]:
        """The processes of the set in use."""
        return [m.client for m in self.members[self.active]]

    def status(self) -> str | None:
        """Why no inference runs now, for the screen; None while any process is up."""
        members = self.members[self.active]
        if self._stop.is_set() or any(m.up for m in members):
            return None
        device = "EDGE TPU" if self.device is Device.EDGETPU else "CPU INFERENCE"
        reason = next((m.client.reason for m in members if m.client.reason), "")
        return f"{device} DOWN: {reason + '; ' if reason else ''}restarting"

    def load(self) -> list[ProcessLoad]:
        """How loaded each process of the set in use is, in the set's order."""
        now = time.monotonic()
        return [process_load(m.client.name, m.name, m.client.state, m.client.work(),
                             first_up=m.client.first_up, now=now)
                for m in self.members[self.active]]

    def hop_ms(self) -> tuple[float, float]:
        """Median and 99th percentile of the process hop per call, in milliseconds."""
        hops = sorted(h for m in self.members[self.active] for h in m.client.hops())
        if not hops:
            return (0.0, 0.0)
        p99 = hops[min(len(hops) - 1, int(len(hops) * 0.99))]
        return (statistics.median(hops) * 1000.0, p99 * 1000.0)

    # --- life -----------------------------------------------------------------------------

    def start(self) -> list[str]:
        """Start the primary set and the supervisor; what each process said when ready.

        The run starts when any process of the set answers; the others are in
        :attr:`start_failures` and retried with backoff. Raises the first failure
        when none answers.
        """
        details, self.start_failures = self._start_set("primary")
        if not details:
            self._stop_set("primary")
            raise self.start_failures[0][1]
        self._thread.start()
        return details

    def _start_set(self, name: str) -> tuple[list[str], list[tuple[int, ProcessStartError]]]:
        """Start every process of a set from this (long-lived) thread: all at once, or one
        after another for a serial set. Those that fail are down, to be retried."""
        members, serial = self.members[name], self._serial(name)
        details: list[str] = []
        failures: list[tuple[int, ProcessStartError]] = []
        spawned: list[int] = []
        for i, m in enumerate(members):
            try:
                self._prepare(m)
                m.client.spawn()
            except ProcessStartError as exc:
                failures.append((i, exc))
                continue
            if serial:
                self._await(i, m, details, failures)
            else:
                spawned.append(i)
        for i in spawned:
            self._await(i, members[i], details, failures)
        now = time.monotonic()
        with self._cond:
            for i, _ in failures:
                members[i].strike(now)
                members[i].retry_at = now + members[i].backoff.wait()
        failures.sort(key=lambda f: f[0])
        return details, failures

    def _serial(self, name: str) -> bool:
        s = self.sets[name]
        return s is not None and s.serial

    @staticmethod
    def _prepare(member: _Member) -> None:
        if member.prepare is not None:
            try:
                member.client.config = member.prepare(member.client.config)
            except ProcessStartError as exc:
                member.client.mark_down(str(exc))
                raise

    @staticmethod
    def _await(i: int, m: _Member, details: list[str],
               failures: list[tuple[int, ProcessStartError]]) -> None:
        try:
            details.append(m.client.wait_ready())
            m.backoff.reset()
        except ProcessStartError as exc:
            failures.append((i, exc))

    def _stop_set(self, name: str) -> None:
        for m in self.members[name]:
            m.client.stop()

    def close(self) -> None:
        """End the processes, then free their shared memory."""
        self.stop_processes()
        self.release()

    def stop_processes(self) -> None:
        """End every process within about half a second: asked first, killed if need be.

        A call waiting on a process returns at once (the process is gone).
        """
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        clients = [m.client for members in self.members.values() for m in members]
        for client in clients:
            client.ask_to_stop()
        deadline = time.monotonic() + STOP_GRACE_S
        for client in clients:
            client.stop(grace=max(0.0, deadline - time.monotonic()))
        if self._thread.ident is not None:
            self._thread.join(2.0)

    def release(self) -> None:
        """Free the shared memory; call once no thread writes into it any more."""
        for members in self.members.values():
            for m in members:
                m.lanes[0].arena.close()

    def lost(self, lane: InferenceLane, reason: str) -> None:
        """A scheduler process found its process dead or hung (the frame is already counted)."""
        with self._cond:
            self.counts.failed_frames += 1
            if lane.client.state is not ProcessState.DOWN:
                return  # it only failed a request; it is still alive
            member = next((m for m in self.members[self.active] if m.client is lane.client),
                          None)
            if member is None or self._stop.is_set():
                return  # a process of a set no longer in use
            if member.lost_generation == lane.client.generation:
                return  # the same loss, seen by the request of the other lane
            member.lost_generation = lane.client.generation
            self.counts.lost += 1
            now = time.monotonic()
            member.strike(now)
            member.retry_at = now + member.backoff.wait()
        log.warning("inference process %s (%s) lost: %s", lane.client.name, member.name, reason)
        self.on_event(AcceleratorLost(device=lane.device.value, process=lane.client.name,
                                      reason=reason, time=self.stamper.run_time(),
                                      stamp=self.stamper.stamp(),
                                      edgetpu_device=member.edgetpu))
        self._wake.set()

    # --- the supervisor ---------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._tend()
            except Exception:  # the supervisor must outlive any surprise
                log.exception("inference supervisor")

    def _tend(self) -> None:
        if self._should_fall_back():
            self._fall_back()
            return
        for member in self.members[self.active]:
            if member.client.state is ProcessState.DOWN and time.monotonic() >= member.retry_at:
                self._restart(member)
        if self.fallen_back and time.monotonic() >= self._probe_at:
            self._probe_primary()

    def _restart(self, member: _Member) -> None:
        try:
            self._prepare(member)
            member.client.start()  # from the supervisor thread, which lives as long as the run
        except ProcessStartError as exc:
            with self._cond:
                now = time.monotonic()
                member.strike(now)
                delay = member.backoff.wait()
                member.retry_at = now + delay
            log.warning("inference process %s (%s) did not restart (%s); next try in %.0f s",
                        member.client.name, member.name, exc, delay)
            return
        member.backoff.reset()
        with self._cond:
            self.counts.restored += 1
            self._cond.notify_all()
        log.warning("inference process %s (%s) restored", member.client.name, member.name)
        self.on_event(AcceleratorRestored(device=member.device.value,
                                          process=member.client.name,
                                          time=self.stamper.run_time(),
                                          stamp=self.stamper.stamp(),
                                          edgetpu_device=member.edgetpu))

    def _should_fall_back(self) -> bool:
        """Every process of the primary set down and failing repeatedly: one that answers,
        or has not failed often, keeps the run on its device."""
        if self.fallen_back or self.sets["fallback"] is None:
            return False
        now = time.monotonic()
        with self._cond:
            return all(m.failing(now) for m in self.members["primary"])

    def _fall_back(self) -> None:
        primary = self.members["primary"]
        reasons = [(m, m.client.reason) for m in primary if m.client.reason]
        if len(primary) == 1:
            reason = reasons[0][1] if reasons else "repeated failures"
        else:
            reason = "; ".join(f"{m.name}: {why}" for m, why in reasons) or "repeated failures"
        self._stop_set("primary")
        started, failures = self._start_set("fallback")
        if not started:
            log.error("cannot fall back to the CPU either: %s", failures[0][1])
            self._stop_set("fallback")
            with self._cond:
                for m in primary:
                    m.strikes.clear()
                    m.client.mark_down("the CPU could not take over either")
            return
        with self._cond:
            self.active = "fallback"
            self.counts.fallback += 1
            for m in primary:
                m.strikes.clear()
            self._cond.notify_all()
        self._probe_at = time.monotonic() + self.retry_s
        what = "the Edge TPU keeps" if len(primary) == 1 else "every Edge TPU keeps"
        log.warning("%s failing (%s): running on the CPU, trying the Edge TPU again every "
                    "%g s", what, reason, self.retry_s)
        self.on_event(AcceleratorFallback(device="cpu", from_="edgetpu", reason=reason,
                                          time=self.stamper.run_time(), stamp=self.stamper.stamp()))

    def _probe_primary(self) -> None:
        """Fallen back: start the Edge TPU processes again; inference returns to them when
        any answers (the others are retried there with backoff)."""
        started, failures = self._start_set("primary")
        if not started:
            self._stop_set("primary")
            with self._cond:
                for m in self.members["primary"]:
                    m.strikes.clear()  # counted only while the set is in use
            log.debug("the Edge TPU is still unavailable: %s", failures[0][1])
            self._probe_at = time.monotonic() + self.retry_s
            return
        with self._cond:
            self.active = "primary"
            self._cond.notify_all()
        self._stop_set("fallback")
        self.counts.restored += 1
        for i, exc in failures:
            log.warning("inference process %s (%s) did not start (%s); retried",
                        self.members["primary"][i].client.name,
                        self.members["primary"][i].name, exc)
        log.warning("the Edge TPU answers again: inference is back on it")
        self.on_event(AcceleratorRestored(device=self.device.value, from_="cpu",
                                          time=self.stamper.run_time(), stamp=self.stamper.stamp()))

    def summary(self) -> dict[str, Any]:
        return {"device": self.device.value, "lost": self.counts.lost,
                "restored": self.counts.restored, "fallback": self.counts.fallback,
                "failed_frames": self.counts.failed_frames}

    def measure_bound(self, share: float, seconds: float) -> float:
        """Frames/s when every active process only invokes its models (no app work at all)."""
        clients = [m.client for m in self.members[self.active] if m.up]
        with ThreadPoolExecutor(max(1, len(clients))) as ex:
            bounds = list(ex.map(lambda c: c.measure_bound(seconds, share), clients))
        return float(sum(b.frames / b.seconds for b in bounds if b.seconds > 0))
