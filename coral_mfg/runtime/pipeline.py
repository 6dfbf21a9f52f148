"""The whole run, once :func:`~coral_mfg.runtime.builder.build_pipeline` has assembled it:
started, watched, reported and stopped.

Running is threads: one supervised capture per stream, the scheduler's
threads, the output thread and the zone watcher. The headless run, the
benchmark and the window all drive this one object; what they show of it
comes from its status board (:class:`~coral_mfg.core.status.RunStatus`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from coral_mfg.analytics.camera import CameraProcessor
from coral_mfg.analytics.safety import ZoneStore
from coral_mfg.capture.sources import SourceSupervisor
from coral_mfg.config.cameras import CameraConfig
from coral_mfg.config.settings import Settings, StreamConfig
from coral_mfg.core.clock import PROCESS_START
from coral_mfg.core.events import CameraBlind, CameraRestored, summary_record
from coral_mfg.core.status import (
    ENDED,
    ERROR,
    LIVE,
    NO_SIGNAL,
    PAUSED,
    AcceleratorStatus,
    DeviceLoad,
    LineStatus,
    Occupant,
    OutputStatus,
    PresenceStatus,
    RunStatus,
    StreamStatus,
    ZoneStatus,
)
from coral_mfg.inference.startup import Inference
from coral_mfg.outputs.base import Sink
from coral_mfg.outputs.event_log import EventLog
from coral_mfg.outputs.health import OutputHealth
from coral_mfg.outputs.history import HistoryWriter
from coral_mfg.outputs.mqtt import MqttPublisher
from coral_mfg.runtime.context import RunContext
from coral_mfg.runtime.scheduler import Scheduler, StreamState
from coral_mfg.runtime.shape_edit import ShapeEditor
from coral_mfg.runtime.status import StatusBoard
from coral_mfg.runtime.zone_watch import ZoneWatcher

log = logging.getLogger(__name__)

JOIN_S = 1.5
STATS_EVERY_S = 60.0
#: The status is made again this often, and at once when something happened.
STATUS_EVERY_S = 0.5


@dataclass
class StreamUnit:
    """One camera, built: what it is, how it is read, its supervised source, its processor
    and its scheduling state."""

    camera: CameraConfig
    config: StreamConfig
    source: SourceSupervisor
    state: StreamState
    processor: CameraProcessor


@dataclass(frozen=True)
class Reported:
    """An output whose faults the run reports, and whose counts the summary lists under
    ``key``; ``warning`` says what the screen should say of it, if anything."""

    key: str
    health: OutputHealth
    counts: Callable[[], dict[str, Any]]
    warning: Callable[[], str | None] = lambda: None


class Pipeline:
    """Starts, watches, reports and stops a run; a context manager that closes it."""

    def __init__(
        self, settings: Settings, inference: Inference, units: dict[str, StreamUnit], *,
        ctx: RunContext, scheduler: Scheduler, zone_watcher: ZoneWatcher | None,
        sinks: list[Sink], reported: list[Reported], event_log: EventLog | None,
        mqtt: MqttPublisher | None, history: HistoryWriter | None = None,
        shape_editor: ShapeEditor | None = None,
        model_warning: str | None = None,
    ) -> None:
        self.settings = settings
        self.inference = inference
        self.units = units
        self.ctx = ctx
        self.scheduler = scheduler
        self.zone_watcher = zone_watcher
        self.sinks = sinks
        self.reported = reported
        self.event_log = event_log
        self.mqtt = mqtt
        self.history = history
        self.shape_editor = shape_editor
        self.model_warning = model_warning
        self._held_by_operator = False
        self.board = StatusBoard(self.assemble_status())
        self._status_at = 0.0
        self._closed = False
        self._started = False
        self._stats_at = time.monotonic()
        self._stats_frames: dict[str, int] = {}
        self._blind_since: dict[str, float] = {}  # cameras blind now, since when

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- control ---------------------------------------------------------------------------

    @property
    def paused(self) -> threading.Event:
        return self.ctx.paused

    def set_paused(self, paused: bool, *, operator: bool = True) -> None:
        """Hold capture (files keep their place) and inference; the window stays live.

        Held by an operator, every camera is ``paused``: nothing is inspected, so its
        checks are unknown, as for a blind camera, and the event log says so. The
        benchmark's own holds between its rounds (``operator=False``) are not reported."""
        self._held_by_operator = paused and operator
        if paused:
            self.ctx.paused.set()
        else:
            self.ctx.paused.clear()
        with self.ctx.cond:
            self.ctx.cond.notify_all()
        self.ctx.changed.set()

    def start(self) -> None:
        """Start every thread: outputs first, so nothing made is ever waiting for them."""
        now = time.monotonic()
        self.ctx.stamper.started = now
        if self.event_log is not None:
            self.event_log.started = now
        for sink in self.sinks:
            sink.start()
        self.ctx.outputs.start()
        self._started = True
        self._publish(force=True)
        self.scheduler.start()
        if self.zone_watcher is not None:
            self.zone_watcher.start()
        for unit in self.units.values():
            unit.source.start()

    def poll(self, timeout: float) -> bool:
        """Wait up to ``timeout``; report and publish what changed; True once every
        stream is finished."""
        done = self.scheduler.wait_done(timeout)
        self._log_stats()
        self._report_outputs()
        self.ctx.flush_ended()
        self._publish()
        return done

    # --- status ----------------------------------------------------------------------------

    @property
    def status(self) -> RunStatus:
        """The newest status (see :meth:`poll`)."""
        return self.board.current

    def _publish(self, force: bool = False) -> None:
        """A new status to the board and the outputs: when something happened, else at
        a fixed rate."""
        now = time.monotonic()
        if not (force or self.ctx.changed.is_set() or now - self._status_at >= STATUS_EVERY_S):
            return
        self.ctx.changed.clear()
        self._status_at = now
        status = self.assemble_status()
        self._watch_blind(status)
        self.board.publish(status)
        if self._started:
            self.ctx.outputs.put(status)

    def _watch_blind(self, status: RunStatus) -> None:
        """``camera_blind`` when a camera stops seeing, ``camera_restored`` when it sees
        again: the event log and plant systems learn that its checks are unknown. Not
        while closing: the run stopping its own sources and processes is no blindness."""
        if self._closed:
            return
        now = time.monotonic()
        for s in status.streams:
            if s.state == ENDED:  # its end is no loss, nor a return (logged as it ends)
                self._blind_since.pop(s.name, None)
                continue
            since = self._blind_since.get(s.name)
            if s.blind is not None and since is None:
                self._blind_since[s.name] = now
                log.warning("camera %s is blind (%s): its zones, lines and presence checks "
                            "are unknown until it sees again", s.name, s.blind)
                self.ctx.event(CameraBlind(stream=s.name, reason=s.blind,
                                           time=self.ctx.stamper.run_time(),
                                           stamp=self.ctx.stamper.stamp()))
            elif s.blind is None and since is not None:
                del self._blind_since[s.name]
                log.info("camera %s sees again after %.1f s", s.name, now - since)
                self.ctx.event(CameraRestored(stream=s.name, blind_s=round(now - since, 2),
                                              time=self.ctx.stamper.run_time(),
                                              stamp=self.ctx.stamper.stamp()))

    def zone_store(self, camera: str) -> ZoneStore | None:
        """The zones in force of a safety camera (None for another)."""
        safety = self.units[camera].processor.safety
        return safety.store if safety is not None else None

    def assemble_status(self) -> RunStatus:
        """The run as it is now, read from its parts (each read is of a whole value)."""
        pool = self.inference.pool
        counts = pool.counts
        accelerator = AcceleratorStatus(
            device=pool.device.value, detector=self.inference.plan.detector_name,
            down=pool.status(), fallback=pool.fallen_back, lost=counts.lost,
            restored=counts.restored, fallbacks=counts.fallback,
            failed_frames=counts.failed_frames,
            devices=tuple(DeviceLoad(d.process, d.device, str(d.state), d.median_ms,
                                     d.busy_share, d.capacity_fps) for d in pool.load()))
        errors = [s.error for u in self.units.values()
                  if (s := self.zone_store(u.camera.name)) is not None and s.error]
        return RunStatus(
            at=time.time(), uptime=time.monotonic() - PROCESS_START,
            station=self.ctx.stamper.station,
            streams=tuple(self._stream(name, unit, accelerator.down)
                          for name, unit in self.units.items()),
            accelerator=accelerator,
            outputs=tuple(OutputStatus(r.key, tuple(r.counts().items()))
                          for r in self.reported),
            sink_failures=tuple(self.ctx.outputs.failures.copy().items()),
            output_warning=self._output_warning(),
            zone_error=errors[0] if errors else None,
            model_warning=self.model_warning,
            paused=self._held_by_operator,
            shift=self.history.totals() if self.history is not None else None,
        )

    def _stream(self, name: str, unit: StreamUnit, down: str | None) -> StreamStatus:
        state, processor = unit.state, unit.processor
        fps, infer_ms = self.ctx.rates(name)
        if state.done:
            kind, reason = ENDED, ("ENDED: --max_frames reached" if state.limit_reached
                                   else "ENDED: its file has been played to the end")
        elif unit.source.lost_reason is not None:
            kind, reason = NO_SIGNAL, f"NO SIGNAL: {unit.source.lost_reason}"
        elif down is not None:
            kind, reason = ERROR, down
        elif self._held_by_operator:
            kind, reason = PAUSED, "PAUSED by the operator: nothing is inspected until resumed"
        elif (after := processor.frozen_after) is not None and processor.frozen_for >= after:
            kind = NO_SIGNAL
            reason = f"FROZEN: the picture has not changed for {processor.frozen_for:.0f} s"
        elif state.failing:
            kind = ERROR
            reason = f"ERROR: {state.consecutive_errors} frames failed ({state.last_error})"
        else:
            kind, reason = LIVE, None
        safety, inspection = processor.safety, processor.inspection
        zones: tuple[ZoneStatus, ...] = ()
        occupants: tuple[Occupant, ...] = ()
        dwelling: tuple[Occupant, ...] = ()
        entries: tuple[tuple[str, int], ...] = ()
        if safety is not None:
            debounce = safety.debounce
            zones = tuple(ZoneStatus(z.name, z.enabled, str(z.mode)) for z in safety.store.zones)
            occupants = tuple(Occupant(z, t, since) for z, t, since in debounce.occupancy())
            dwelling = tuple(Occupant(z, t, since) for z, t, since in debounce.dwelling)
            entries = tuple(debounce.violations.copy().items())
        lines = tuple(LineStatus(line.name, line.spec.directions,
                                 tuple((d, g, n) for (d, g), n in line.counts.copy().items()))
                      for line in processor.lines)
        presence = tuple(PresenceStatus(c.name, c.spec.label, c.spec.expected, c.seen,
                                        c.missing) for c in processor.presence)
        return StreamStatus(
            name=name, source=unit.source.shown, state=kind, reason=reason, fps=fps,
            fps_run=state.fps(), inference_ms=infer_ms, frames=processor.processed,
            dropped=unit.source.dropped, errors=state.errors,
            source_lost=unit.source.lost_count, roles=unit.camera.roles,
            skipped=processor.skipped, zones=zones, occupants=occupants, entries=entries,
            inspected=tuple(inspection.counts().items()) if inspection is not None else (),
            dwelling=dwelling, lines=lines, presence=presence, clock=processor.clock,
            passing=() if inspection is None else tuple(
                inspection.labels.classifier[i] for i in sorted(inspection.labels.passing)))

    def _output_warning(self) -> str | None:
        """A failing output or a nearly full disk, for the screen; None when all is well."""
        for r in self.reported:
            if r.health.error is not None:
                return (f"{r.health.name.upper()} NOT WRITTEN: {r.health.error} "
                        f"({r.health.lost} lost)")
        return next((w for r in self.reported if (w := r.warning()) is not None), None)

    def _report_outputs(self) -> None:
        """Output faults and recoveries go to the event log in order; the event log's own
        wait until it writes again, or they would be lost with the records they tell of."""
        for r in self.reported:
            if self.event_log is not None and r.health is self.event_log.health \
                    and r.health.error:
                continue
            for t in r.health.transitions():
                self.ctx.event(t.event(self.ctx.stamper))

    def _log_stats(self, every_s: float = STATS_EVERY_S) -> None:
        """Once a minute per stream: fps, drops, errors and source losses; per output,
        what it wrote and lost."""
        now = time.monotonic()
        if now - self._stats_at < every_s:
            return
        span = now - self._stats_at
        self._stats_at = now
        status = self.assemble_status()
        for s in status.streams:
            done = s.frames - self._stats_frames.get(s.name, 0)
            self._stats_frames[s.name] = s.frames
            log.info("%s: %.1f fps, %d dropped, %d errors, %d source losses%s", s.name,
                     done / span, s.dropped, s.errors, s.source_lost,
                     f" ({s.reason})" if s.reason else "")
        for r in self.reported:
            c = r.health.counts()
            log.info("%s: %d written, %d dropped, %d lost%s", r.health.name, c["written"],
                     c["dropped"], c["lost"], f" ({c['error']})" if c["error"] else "")

    # --- the end ---------------------------------------------------------------------------

    def close(self, keep_inference: bool = False) -> dict[str, Any]:
        """Stop everything, drain outputs, write the summary; safe to call twice.

        ``keep_inference`` leaves the inference processes running for the caller to use
        (the benchmark measures them alone) and to close.
        """
        if self._closed:
            return summary_record(self.board.current)
        self._closed = True
        self.ctx.stop.set()
        for ev in self.ctx.capture_stops.values():
            ev.set()
        if not keep_inference:
            self.inference.pool.stop_processes()  # first: a call waiting on a hung one returns
        self.scheduler.join(JOIN_S)
        # objects still in view end now: every counted verdict gets its event
        for unit in self.units.values():
            if unit.processor.inspection is not None:
                self.ctx.final_events(*unit.processor.inspection.flush())
        if not keep_inference:
            self.inference.pool.release()
        for t in (*(u.source for u in self.units.values()), self.zone_watcher):
            if t is not None and t.ident is not None:  # started
                t.join(JOIN_S)
        self.ctx.flush_ended()
        self._publish(force=True)  # the last counts, to every output, after the last events
        self.ctx.outputs.finish(JOIN_S * 2)
        for sink in self.sinks:
            if sink is not self.event_log and sink is not self.mqtt:
                _closing(type(sink).__name__, sink.close)
        if self.mqtt is not None:  # before the summary: it counts the goodbye, and the lost
            mqtt, stopping = self.mqtt, self.assemble_status()

            def goodbye() -> None:
                mqtt.stopped(stopping)
                mqtt.close()

            _closing("mqtt", goodbye)
        if self.event_log is not None:
            for r in self.reported:
                for change in r.health.transitions():
                    self.event_log.event(change.event(self.ctx.stamper))
        final = self.assemble_status()
        self.board.publish(final)
        summary = summary_record(final)
        if self.event_log is not None:
            self.event_log.record(summary)
            _closing("event log", self.event_log.close)
        threads = (*(u.source for u in self.units.values()), self.ctx.outputs)
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("threads still running at exit: %s", ", ".join(alive))
        return summary


def _closing(output: str, close: Callable[[], None]) -> None:
    """Close one output; its failure is logged, and the others and the summary go on."""
    try:
        close()
    except Exception:
        log.exception("%s: failed while closing; the other outputs and the summary go on",
                      output)
