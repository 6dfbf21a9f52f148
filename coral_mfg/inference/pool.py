"""The run's inference processes, kept alive.

A process that dies or hangs is restarted with backoff (1, 2, 4 ... 30 s). With
``--device auto``, an Edge TPU that keeps failing hands over to the CPU
processes; the Edge TPU is then tried again every half minute, and takes over
again as soon as it answers. Every change is logged and reported as a run
event (``accelerator_lost``, ``accelerator_restored``, ``accelerator_fallback``)
and counted for the summary.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from coral_mfg.core.backoff import Backoff
from coral_mfg.core.events import (
    AcceleratorFallback,
    AcceleratorLost,
    AcceleratorRestored,
    EventSink,
    Stamper,
)
from coral_mfg.inference.client import ProcessClient, ProcessState
from coral_mfg.inference.errors import ProcessStartError
from coral_mfg.inference.lane import InferenceLane
from coral_mfg.inference.plan import Labels
from coral_mfg.inference.protocol import LANES, InputArena, ProcessConfig
from coral_mfg.inference.runtime import Device

log = logging.getLogger(__name__)

#: Failures of the Edge TPU within this window that make an auto run fall back.
FALLBACK_AFTER = 3
FALLBACK_WINDOW_S = 120.0
TICK_S = 0.2
STOP_GRACE_S = 0.5



@dataclass(frozen=True)
class ProcessSet:
    """The processes of one device: one per Edge TPU, or one per CPU interpreter pair."""

    device: Device
    configs: tuple[ProcessConfig, ...]
    describe: str  # for the log: models and where they run


@dataclass
class _Member:
    """One process of a set: its lanes, its restart schedule."""

    lanes: tuple[InferenceLane, ...]
    retry_at: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)
    lost_generation: int = 0  # the process already reported lost

    @property
    def client(self) -> ProcessClient:
        return self.lanes[0].client

    @property
    def device(self) -> Device:
        return self.lanes[0].device


@dataclass
class PoolCounts:
    """What happened to the processes, for the summary."""

    lost: int = 0
    restored: int = 0
    fallback: int = 0
    failed_frames: int = 0
    failures: deque[float] = field(default_factory=deque)


class ProcessPool:
    """Which lanes the scheduler may use now, and the thread that keeps them alive."""

    def __init__(
        self, primary: ProcessSet, fallback: ProcessSet | None, labels: Labels, *,
        timeout: float, on_event: EventSink, stamper: Stamper, retry_s: float = 30.0,
    ) -> None:
        self.retry_s = retry_s
        self.sets = {"primary": primary, "fallback": fallback}
        self.members = {name: [self._member(c, s.device, labels, timeout) for c in s.configs]
                        for name, s in self.sets.items() if s is not None}
        self.active = "primary"
        self.on_event = on_event
        self.stamper = stamper
        self.counts = PoolCounts()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._probe_at = 0.0
        self._thread = threading.Thread(target=self._supervise, name="inference-pool",
                                         daemon=True)

    @staticmethod
    def _member(config: ProcessConfig, device: Device, labels: Labels, timeout: float) -> _Member:
        arena = InputArena.create(config.detector.input_size, config.classifier.input_size)
        client = ProcessClient(replace(config, arena=arena.name), arena, timeout)
        return _Member(tuple(InferenceLane(client, arena, lane, device, labels)
                             for lane in range(LANES)))

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
        """The lane a scheduler process may use now, or None (not in this set, or down)."""
        members = self.members[self.active]
        process, lane = slot % len(members), slot // len(members)
        if lane >= LANES:
            return None
        member = members[process]
        return member.lanes[lane] if member.client.state is ProcessState.UP else None

    def clients(self) -> list[ProcessClient]:
        """The processes of the set in use."""
        return [m.client for m in self.members[self.active]]

    def status(self) -> str | None:
        """Why no inference runs now, for the screen; None while any process is up."""
        members = self.members[self.active]
        if self._stop.is_set() or any(m.client.state is ProcessState.UP for m in members):
            return None
        device = "EDGE TPU" if self.device is Device.EDGETPU else "CPU INFERENCE"
        reason = next((m.client.reason for m in members if m.client.reason), "")
        return f"{device} DOWN: {reason + '; ' if reason else ''}restarting"

    def hop_ms(self) -> tuple[float, float]:
        """Median and 99th percentile of the process hop per call, in milliseconds."""
        hops = sorted(h for m in self.members[self.active] for h in m.client.hops())
        if not hops:
            return (0.0, 0.0)
        p99 = hops[min(len(hops) - 1, int(len(hops) * 0.99))]
        return (statistics.median(hops) * 1000.0, p99 * 1000.0)

    # --- life -----------------------------------------------------------------------------

    def start(self) -> list[str]:
        """Start the primary set (all at once) and the supervisor; raises the first failure."""
        details = self._start_set("primary")
        self._thread.start()
        return details

    def _start_set(self, name: str) -> list[str]:
        """Spawn every process of a set from this (long-lived) thread, then wait for all."""
        members = self.members[name]
        for m in members:
            m.client.spawn()
        details: list[str] = []
        try:
            for m in members:
                details.append(m.client.wait_ready())
        except ProcessStartError:
            for m in members:
                m.client.stop()
            raise
        return details

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
        self.counts.failed_frames += 1
        if lane.client.state is not ProcessState.DOWN:
            return  # it only failed a request; it is still alive
        member = next((m for m in self.members[self.active] if m.client is lane.client), None)
        if member is None or self._stop.is_set():
            return  # a process of a set no longer in use
        if member.lost_generation == lane.client.generation:
            return  # the same loss, seen by the request of the other lane
        member.lost_generation = lane.client.generation
        self.counts.lost += 1
        self._strike()
        member.retry_at = time.monotonic() + member.backoff.wait()
        log.warning("inference process %s (%s) lost: %s", lane.client.name,
                    lane.device.value, reason)
        self.on_event(AcceleratorLost(device=lane.device.value, process=lane.client.name,
                                      reason=reason, time=self.stamper.run_time(),
                                      stamp=self.stamper.stamp()))
        self._wake.set()

    def _strike(self) -> None:
        now = time.monotonic()
        failures = self.counts.failures
        failures.append(now)
        while failures and now - failures[0] > FALLBACK_WINDOW_S:
            failures.popleft()

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
        now = time.monotonic()
        if self._should_fall_back():
            self._fall_back()
            return
        for member in self.members[self.active]:
            if member.client.state is ProcessState.DOWN and now >= member.retry_at:
                self._restart(member)
        if self.fallen_back and now >= self._probe_at:
            self._probe_primary()

    def _restart(self, member: _Member) -> None:
        try:
            member.client.start()  # from the supervisor thread, which lives as long as the run
        except ProcessStartError as exc:
            self._strike()
            delay = member.backoff.wait()
            member.retry_at = time.monotonic() + delay
            log.warning("inference process %s did not restart (%s); next try in %.0f s",
                        member.client.name, exc, delay)
            return
        member.backoff.reset()
        self.counts.restored += 1
        log.warning("inference process %s (%s) restored", member.client.name,
                    member.device.value)
        self.on_event(AcceleratorRestored(device=member.device.value,
                                          process=member.client.name,
                                          time=self.stamper.run_time(),
                                          stamp=self.stamper.stamp()))

    def _should_fall_back(self) -> bool:
        return (not self.fallen_back and self.sets["fallback"] is not None
                and len(self.counts.failures) >= FALLBACK_AFTER)

    def _fall_back(self) -> None:
        reason = next((m.client.reason for m in self.members["primary"] if m.client.reason),
                      "repeated failures")
        for m in self.members["primary"]:
            m.client.stop()
        try:
            self._start_set("fallback")
        except ProcessStartError as exc:
            log.error("cannot fall back to the CPU either: %s", exc)
            self.counts.failures.clear()
            for m in self.members["primary"]:
                m.client.mark_down("the CPU could not take over either")
            return
        self.active = "fallback"
        self.counts.fallback += 1
        self.counts.failures.clear()
        self._probe_at = time.monotonic() + self.retry_s
        log.warning("the Edge TPU keeps failing (%s): running on the CPU, trying the Edge TPU "
                    "again every %g s", reason, self.retry_s)
        self.on_event(AcceleratorFallback(device="cpu", from_="edgetpu", reason=reason,
                                          time=self.stamper.run_time(), stamp=self.stamper.stamp()))

    def _probe_primary(self) -> None:
        try:
            self._start_set("primary")
        except ProcessStartError as exc:
            log.debug("the Edge TPU is still unavailable: %s", exc)
            self._probe_at = time.monotonic() + self.retry_s
            return
        self.active = "primary"
        for m in self.members["fallback"]:
            m.client.stop()
        self.counts.restored += 1
        log.warning("the Edge TPU answers again: inference is back on it")
        self.on_event(AcceleratorRestored(device=self.device.value, from_="cpu",
                                          time=self.stamper.run_time(), stamp=self.stamper.stamp()))

    def summary(self) -> dict[str, Any]:
        return {"device": self.device.value, "lost": self.counts.lost,
                "restored": self.counts.restored, "fallback": self.counts.fallback,
                "failed_frames": self.counts.failed_frames}

    def measure_bound(self, share: float, seconds: float) -> float:
        """Frames/s when every active process only invokes its models (no app work at all)."""
        clients = [m.client for m in self.members[self.active]]
        with ThreadPoolExecutor(len(clients)) as ex:
            bounds = list(ex.map(lambda c: c.measure_bound(seconds, share), clients))
        return float(sum(b.frames / b.seconds for b in bounds if b.seconds > 0))
