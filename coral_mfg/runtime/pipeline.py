"""The whole run: built by :func:`build_pipeline`, then started, watched and closed.

Building opens everything that can fail on bad input (sources first, then
zones, models and output files), so a run that starts has nothing left to
refuse. Running is threads: one supervised capture per stream, the scheduler's
threads, the output thread and the zone watcher. The headless run, the
benchmark and the window all drive this one object.
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from coral_mfg.analytics.inspection import VisualInspection
from coral_mfg.analytics.safety import WorkerSafety, ZoneStore
from coral_mfg.analytics.tracking import Tracker
from coral_mfg.analytics.zones import KeepoutZone
from coral_mfg.capture.sources import (
    FrameSlot,
    Opener,
    SourceKind,
    SourceSupervisor,
    VideoSource,
    probe_source,
    source_fps,
    source_kind,
)
from coral_mfg.config.settings import Settings, StreamConfig
from coral_mfg.config.zones import ZoneSource
from coral_mfg.core.clock import iso_utc, stamp
from coral_mfg.core.errors import UserError
from coral_mfg.core.files import writable_folder
from coral_mfg.core.frame import Frame
from coral_mfg.core.geometry import letterbox
from coral_mfg.core.results import (
    STREAMS,
    VISUAL_INSPECTION,
    WORKER_SAFETY,
    FrameResult,
    SnapshotRequest,
)
from coral_mfg.inference.runtime import runtime_backend
from coral_mfg.inference.startup import Inference, start_inference
from coral_mfg.outputs.base import OutputThread, RunEvent, Sink, StreamEnded
from coral_mfg.outputs.encoder import RecordTarget
from coral_mfg.outputs.event_log import EventLog, Rotation
from coral_mfg.outputs.harvest import Harvester
from coral_mfg.outputs.health import OutputHealth
from coral_mfg.outputs.mqtt import MqttPublisher
from coral_mfg.outputs.recording import SideBySideRecorder
from coral_mfg.outputs.retention import GB, Retention
from coral_mfg.outputs.snapshots import Snapshots
from coral_mfg.runtime.scheduler import Scheduler, StreamProcessor, StreamState
from coral_mfg.runtime.zone_watch import ZonePlacement, ZoneWatcher, zones_of

log = logging.getLogger(__name__)

JOIN_S = 1.5
STATS_EVERY_S = 60.0


@dataclass
class RunContext:
    """What every thread of one run shares: stop and pause, the lock frames move under,
    and the output queue that keeps run events in order with the frames."""

    outputs: OutputThread
    stop: threading.Event
    station: str = "station"
    snapshots: Snapshots | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)
    paused: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    capture_stops: dict[str, threading.Event] = field(
        default_factory=lambda: {name: threading.Event() for name in STREAMS})
    ended: list[str] = field(default_factory=list)

    def stamped(self, record: dict[str, Any]) -> dict[str, Any]:
        """A run event with the run time and the stamp every event carries."""
        record = {**record, "time": round(time.monotonic() - self.started, 4)}
        return stamp(record, time.time(), self.station)

    def event(self, record: dict[str, Any]) -> None:
        """A run event (source lost, zones reloaded) for the event log."""
        self.outputs.put(RunEvent(self.stamped(record)))

    def _stamp(self, record: dict[str, Any], stream: str, wall: float) -> None:
        """A stream's event gets its stream, its stamp and the name of its picture."""
        record["stream"] = stream
        stamp(record, wall, self.station)
        path = self.snapshots.name(record) if self.snapshots is not None else None
        if path is not None:
            record["snapshot"] = str(path)

    def result(self, result: FrameResult) -> None:
        """A processed frame: its events are stamped (and their pictures named), then it
        goes to the outputs."""
        for record in result.events:
            self._stamp(record, result.stream, result.frame.wall)
        self.outputs.put(result)

    def final_events(self, stream: str, events: tuple[dict[str, Any], ...],
                     pictures: tuple[SnapshotRequest, ...]) -> None:
        """A stream's last events, made as the run stops (no frame carries them)."""
        wall = time.time()
        for record in events:
            self._stamp(record, stream, wall)
            mine = tuple(p for p in pictures if p.event is record)
            self.outputs.put(RunEvent(record, mine))

    def stream_done(self, name: str) -> None:
        """Called with the scheduler's lock held: only flag, never block."""
        self.capture_stops[name].set()
        self.ended.append(name)

    def flush_ended(self) -> None:
        while self.ended:
            self.outputs.put(StreamEnded(self.ended.pop(0)))


@dataclass
class StreamUnit:
    """One stream, built: how it is read, its supervised source and its processing state."""

    config: StreamConfig
    source: SourceSupervisor
    state: StreamState


@dataclass(frozen=True)
class _Probe:
    """A source opened at start-up, with its first frame: proof that it works."""

    opener: Opener
    cap: VideoSource
    first: Frame | None
    fps: float
    size: tuple[int, int]


class Pipeline:
    """Starts, watches, reports and stops a run that :func:`build_pipeline` assembled."""

    def __init__(
        self, settings: Settings, inference: Inference, units: dict[str, StreamUnit],
        *, ctx: RunContext, scheduler: Scheduler, zone_store: ZoneStore,
        zone_watcher: ZoneWatcher | None, events: EventLog | None,
        recorders: tuple[SideBySideRecorder, ...], mqtt: MqttPublisher | None = None,
        harvester: Harvester | None = None,
    ) -> None:
        self.settings = settings
        self.inference = inference
        self.units = units
        self.ctx = ctx
        self.scheduler = scheduler
        self.zone_store = zone_store
        self.zone_watcher = zone_watcher
        self.events = events
        self.recorders = recorders
        self.mqtt = mqtt
        self.harvester = harvester
        self._state_at = 0.0
        self._state_frames: dict[str, tuple[float, int]] = {}
        self.safety: WorkerSafety = units[WORKER_SAFETY].state.processor  # type: ignore[assignment]
        self.inspection: VisualInspection = (
            units[VISUAL_INSPECTION].state.processor)  # type: ignore[assignment]
        self._closed = False
        self._stats_at = time.monotonic()
        self._stats_frames: dict[str, int] = {}

    @property
    def paused(self) -> threading.Event:
        return self.ctx.paused

    @property
    def device(self) -> str:
        return self.inference.pool.device.value

    def status(self, stream: str) -> str | None:
        """Why a stream shows no live video now (for the screen), or None."""
        unit = self.units[stream]
        if unit.source.lost_reason is not None:
            return f"NO SIGNAL: {unit.source.lost_reason}"
        down = self.inference.pool.status()
        if down is not None:
            return down
        if unit.state.failing:
            return f"ERROR: {unit.state.consecutive_errors} frames failed ({unit.state.last_error})"
        return None

    def _healths(self) -> list[OutputHealth]:
        found = [self.events.health] if self.events is not None else []
        found += [r.health for r in self.recorders]
        if self.ctx.snapshots is not None:
            found.append(self.ctx.snapshots.health)
        if self.mqtt is not None:
            found.append(self.mqtt.health)
        if self.harvester is not None:
            found.append(self.harvester.health)
        return found

    def output_warning(self) -> str | None:
        """A failing output or a nearly full disk, for the screen; None when all is well."""
        for health in self._healths():
            if health.error is not None:
                return f"{health.name.upper()} NOT WRITTEN: {health.error} ({health.lost} lost)"
        for r in self.recorders:
            if r.writer.disk_warning is not None:
                return r.writer.disk_warning
        return None

    def _report_outputs(self) -> None:
        """Output faults and recoveries go to the event log in order; the event log's own
        wait until it writes again, or they would be lost with the records they tell of."""
        for health in self._healths():
            if self.events is not None and health is self.events.health and health.error:
                continue
            for t in health.transitions():
                self.ctx.event(t.to_event())

    def stream_state(self, stream: str, fps: float) -> dict[str, Any]:
        """A stream's state for plant systems and monitoring: status, rates and counts."""
        unit = self.units[stream]
        status = self.status(stream)
        kind = ("no_signal" if unit.source.lost_reason is not None
                else "live" if status is None else "error")
        processed = unit.state.processor.processed
        return {"status": kind, "reason": status, "fps": round(fps, 2), "frames": processed,
                "dropped": unit.source.dropped, "errors": unit.state.errors,
                "device": self.device, "timestamp": iso_utc(time.time()),
                "station": self.ctx.station}

    def _publish_state(self) -> None:
        if self.mqtt is None:
            return
        now = time.monotonic()
        if now - self._state_at < self.settings.mqtt.mqtt_state_seconds:
            return
        self._state_at = now
        for stream in STREAMS:
            self.mqtt.state(stream, self.stream_state(stream, self._recent_fps(stream, now)))

    def _recent_fps(self, stream: str, now: float) -> float:
        """Frames per second since the last call for this stream."""
        processed = self.units[stream].state.processor.processed
        then, before = self._state_frames.get(stream, (self.ctx.started, 0))
        self._state_frames[stream] = (now, processed)
        return (processed - before) / (now - then) if now > then else 0.0

    def zone_warning(self) -> str | None:
        """A refused zone edit, shown on the safety pane until a good one replaces it."""
        return self.zone_store.error

    def set_paused(self, paused: bool) -> None:
        """Hold capture (files keep their place) and inference; the window stays live."""
        if paused:
            self.ctx.paused.set()
        else:
            self.ctx.paused.clear()
        with self.ctx.cond:
            self.ctx.cond.notify_all()

    def dropped(self) -> dict[str, int]:
        return {name: u.source.dropped for name, u in self.units.items()}

    def log_stats(self, every_s: float = STATS_EVERY_S) -> None:
        """Once a minute per stream: fps, drops, errors and source losses."""
        now = time.monotonic()
        if now - self._stats_at < every_s:
            return
        span = now - self._stats_at
        self._stats_at = now
        for name, unit in self.units.items():
            processed = unit.state.processor.processed
            done = processed - self._stats_frames.get(name, 0)
            self._stats_frames[name] = processed
            status = self.status(name)
            log.info("%s: %.1f fps, %d dropped, %d errors, %d source losses%s", name,
                     done / span, unit.source.dropped, unit.state.errors, unit.source.lost_count,
                     f" ({status})" if status else "")
        for health in self._healths():
            c = health.counts()
            log.info("%s: %d written, %d dropped, %d lost%s", health.name, c["written"],
                     c["dropped"], c["lost"], f" ({c['error']})" if c["error"] else "")

    def start(self) -> None:
        self.ctx.started = time.monotonic()
        if self.events is not None:
            self.events.started = self.ctx.started
        self.safety.started = self.ctx.started
        self.ctx.outputs.start()
        self.scheduler.start()
        if self.zone_watcher is not None:
            self.zone_watcher.start()
        for unit in self.units.values():
            unit.source.start()

    def poll(self, timeout: float) -> bool:
        """Wait up to ``timeout``; True once every stream is finished."""
        done = self.scheduler.wait_done(timeout)
        self.log_stats()
        self._report_outputs()
        self._publish_state()
        self.ctx.flush_ended()
        return done

    def summary(self) -> dict[str, Any]:
        frames = {name: u.state.processor.processed for name, u in self.units.items()}
        return {
            "type": "summary",
            "timestamp": iso_utc(time.time()),
            "station": self.ctx.station,
            "frames": frames,
            "dropped": self.dropped(),
            "inspected": self.inspection.counts(),
            "keepout_violations": self.safety.violations,
            "violations_by_zone": dict(self.safety.debounce.violations),
            "fps": {name: round(u.state.fps(), 2) for name, u in self.units.items()},
            "errors": {name: u.state.errors for name, u in self.units.items()},
            "source_lost": {name: u.source.lost_count for name, u in self.units.items()},
            "device": self.device,
            "accelerator": self.inference.pool.summary(),
            "outputs": self.output_counts(),
        }

    def output_counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = {}
        if self.events is not None:
            counts["events"] = self.events.counts()
        for r in self.recorders:
            counts["recording" if r.writer.target.folder is None else "segments"] = r.counts()
        if self.ctx.snapshots is not None:
            counts["snapshots"] = self.ctx.snapshots.counts()
        if self.mqtt is not None:
            counts["mqtt"] = self.mqtt.summary()
        if self.harvester is not None:
            counts["harvest"] = self.harvester.counts()
        if self.ctx.outputs.failures:
            counts["sink_failures"] = dict(self.ctx.outputs.failures)
        return counts

    def close(self, keep_inference: bool = False) -> dict[str, Any]:
        """Stop everything, drain outputs, write the summary; safe to call twice.

        ``keep_inference`` leaves the inference processes running for the caller to use
        (the benchmark measures them alone) and to close.
        """
        if self._closed:
            return self.summary()
        self._closed = True
        self.ctx.stop.set()
        for ev in self.ctx.capture_stops.values():
            ev.set()
        if not keep_inference:
            self.inference.pool.stop_processes()  # first: a call waiting on a hung one returns
        self.scheduler.join(JOIN_S)
        # objects still in view end now: every counted verdict gets its event
        self.ctx.final_events(VISUAL_INSPECTION, *self.inspection.flush())
        if not keep_inference:
            self.inference.pool.release()
        for t in (*(u.source for u in self.units.values()), self.zone_watcher):
            if t is not None and t.ident is not None:  # started
                t.join(JOIN_S)
        self.ctx.flush_ended()
        self.ctx.outputs.finish(JOIN_S * 2)
        for recorder in self.recorders:
            _closing("recording", recorder.close)
        if self.harvester is not None:
            _closing("harvest", self.harvester.close)
        if self.events is not None:
            for health in self._healths():
                for change in health.transitions():
                    self.events.event(self.ctx.stamped(change.to_event()))
        summary = self.summary()
        if self.mqtt is not None:
            mqtt = self.mqtt
            stopped = {s: {**self.stream_state(s, 0.0), "status": "stopped"} for s in STREAMS}

            def goodbye() -> None:
                for stream, state in stopped.items():
                    mqtt.state(stream, state)
                mqtt.close()

            _closing("mqtt", goodbye)
        if self.events is not None:
            self.events.event(summary)
            _closing("event log", self.events.close)
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


# --- building -------------------------------------------------------------------------------


def _probe(config: StreamConfig, out_size: tuple[int, int], opener: Opener | None) -> _Probe:
    def default() -> tuple[VideoSource, Frame | None]:
        return probe_source(config.spec, *out_size, config.name)

    opener = opener or default
    cap, first = opener()
    size = first.size if first is not None else out_size
    return _Probe(opener, cap, first, source_fps(cap), size)


def _check_outputs(settings: Settings) -> None:
    """Output folders that cannot be written fail before anything slow is opened."""
    for flag, path, probe in settings.written():
        problem = writable_folder(probe)
        if problem:
            raise UserError(f"--{flag} {path}: {problem}; pass a writable path")


def _check_files(settings: Settings) -> None:
    """Files a run reads besides its inputs and models: the broker's TLS files."""
    for key in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"):
        path = settings.value(key)
        if path is not None and not path.is_file():
            raise UserError(f"--{key} {path} not found: pass an existing PEM file")


def _probe_all(
    settings: Settings, openers: dict[str, Opener]
) -> dict[str, _Probe]:
    probes: dict[str, _Probe] = {}
    try:
        for name in STREAMS:
            probes[name] = _probe(settings.stream(name), settings.out_size, openers.get(name))
    except BaseException:
        for p in probes.values():
            p.cap.release()
        raise
    return probes


def _zones(settings: Settings, picture_size: tuple[int, int]) -> tuple[
        ZoneSource, ZonePlacement, tuple[KeepoutZone, ...]]:
    source, placement, zones = zones_of(settings, letterbox(settings.out_size, picture_size))
    _, _, pw, ph = placement.picture
    for z in zones:
        if z.spec is not None and z.spec.units == "pixels" and tuple(z.spec.frame_size) != (pw, ph):
            fw, fh = z.spec.frame_size
            log.info("zone '%s': its points are pixels of a %dx%d frame; scaled to the %dx%d "
                     "picture", z.name, fw, fh, pw, ph)
    return source, placement, zones


def _sinks(
    settings: Settings, fps: float, zones: Callable[[], tuple[KeepoutZone, ...]]
) -> tuple[EventLog | None, tuple[SideBySideRecorder, ...]]:
    out = settings.output
    events = EventLog(out.events, time.monotonic(), Rotation(
        out.events_rotate_mb * 2**20, out.events_rotate_daily, out.events_keep),
    ) if out.events else None
    recorders: list[SideBySideRecorder] = []
    try:
        for target in _record_targets(settings):
            recorders.append(SideBySideRecorder(target, settings.out_size, fps, zones,
                                                settings.mask,
                                                lossless=not settings.inputs.realtime))
    except BaseException:
        for r in recorders:
            r.close()
        if events is not None:
            events.close()
        raise
    return events, tuple(recorders)


def _snapshots(settings: Settings,
               zones: Callable[[], tuple[KeepoutZone, ...]]) -> Snapshots | None:
    out = settings.output
    kinds = frozenset(k for k, on in (("keepout_enter", out.snapshot_keepout),
                                      ("graded", out.snapshot_graded)) if on)
    folder = out.snapshot_dir or (out.events.parent / "snapshots" if out.events else None)
    if folder is None or not kinds:
        return None
    return Snapshots(folder, kinds, out.snapshot_keep, zones, settings.mask)


def _record_targets(settings: Settings) -> list[RecordTarget]:
    rec = settings.recording
    retention = Retention(round(rec.keep_gb * GB), rec.keep_days * 86400.0,
                          round(rec.min_free_gb * GB))
    targets = []
    if settings.output.output is not None:
        targets.append(RecordTarget(file=settings.output.output, retention=retention,
                                    preset=rec.encoder_preset))
    if rec.record_dir is not None:
        targets.append(RecordTarget(folder=rec.record_dir, segment_s=rec.segment_minutes * 60,
                                    retention=retention, preset=rec.encoder_preset))
    return targets


def _log_start(settings: Settings, inference: Inference,
               zones: tuple[KeepoutZone, ...]) -> None:
    backend = runtime_backend()
    log.info("versions: python %s, numpy %s, opencv %s, %s %s", platform.python_version(),
             np.__version__, cv2.__version__, backend.name, backend.version)
    for line in inference.notes:
        log.info("inference: %s", line)
    log.info("inputs: worker safety %s; visual inspection %s",
             settings.inputs.worker_safety_input, settings.inputs.visual_inspection_input)
    plan = inference.plan
    log.info("detector: %s; thresholds worker %.2f, inspection %.2f", plan.note,
             plan.worker_threshold, plan.inspection_threshold)
    labels = inference.labels
    log.info("inspecting %s; grades %s (passing: %s)",
             ", ".join(dict.fromkeys(labels.inspected.values())),
             ", ".join(labels.classifier.values()),
             ", ".join(labels.classifier[i] for i in sorted(labels.passing)))
    log.info("keep-out zones: %s", "; ".join(
        f"{z.name} ({z.mode}, enter {z.enter_frames}, exit {z.exit_frames}"
        f"{'' if z.enabled else ', disabled'}) from {z.source.path if z.source else '-'}"
        for z in zones))


def _unit(
    config: StreamConfig, probe: _Probe, processor: StreamProcessor, ctx: RunContext,
    scheduler: Scheduler,
) -> StreamUnit:
    leaky = config.realtime or source_kind(config.spec) is not SourceKind.FILE
    slot = FrameSlot(ctx.cond, leaky=leaky)
    source = SourceSupervisor(
        config, slot, ctx.capture_stops[config.name], opener=probe.opener,
        on_end=scheduler.source_ended, on_event=ctx.event, paused=ctx.paused,
        first=(probe.cap, probe.first),
    )
    state = StreamState(processor, slot, config.max_frames)
    scheduler.streams.append(state)
    return StreamUnit(config, source, state)


def build_pipeline(
    settings: Settings,
    extra_sinks: list[Sink] | None = None,
    openers: dict[str, Opener] | None = None,
) -> Pipeline:
    """Open and check everything a run needs, inputs first (they fail fastest)."""
    # OpenCV's own thread pool splits each small resize across cores that inference
    # already keeps busy; one thread measured 3 % more frames/s on 2 cores.
    cv2.setNumThreads(1)
    _check_outputs(settings)
    _check_files(settings)
    probes = _probe_all(settings, openers or {})
    try:
        return _assemble(settings, probes, list(extra_sinks or []))
    except BaseException:
        for p in probes.values():
            p.cap.release()
        raise


def _assemble(settings: Settings, probes: dict[str, _Probe], extra: list[Sink]) -> Pipeline:
    source, placement, zones = _zones(settings, probes[WORKER_SAFETY].size)
    stop = threading.Event()
    ctx = RunContext(OutputThread([], stop), stop)
    inference = start_inference(settings.models, ctx.event)
    try:
        return _wire(settings, probes, extra, inference, ctx=ctx,
                     zoning=(source, placement, zones))
    except BaseException:
        inference.pool.close()
        raise


def _wire(
    settings: Settings, probes: dict[str, _Probe], extra: list[Sink], inference: Inference,
    *, ctx: RunContext, zoning: tuple[ZoneSource, ZonePlacement, tuple[KeepoutZone, ...]],
) -> Pipeline:
    source, placement, zones = zoning
    _log_start(settings, inference, zones)
    plan, out_size = inference.plan, settings.out_size
    store = ZoneStore(zones)
    t = settings.tracking

    def tracker(high: float, report_ended: bool = False) -> Tracker:
        return Tracker(high, low=min(t.track_low_score, high), coast_frames=t.track_coast_frames,
                       report_ended=report_ended)

    processors: dict[str, StreamProcessor] = {
        WORKER_SAFETY: WorkerSafety(store, tracker(plan.worker_threshold), out_size, t),
        VISUAL_INSPECTION: VisualInspection(tracker(plan.inspection_threshold, True), out_size,
                                            t),
    }
    events, recorders = _sinks(settings, max(p.fps for p in probes.values()),
                               lambda: store.zones)
    sinks: list[Sink] = [*([events] if events is not None else []), *recorders]
    ctx.station = settings.station
    ctx.snapshots = _snapshots(settings, lambda: store.zones)
    if ctx.snapshots is not None:
        sinks.append(ctx.snapshots)
    inspection: VisualInspection = processors[VISUAL_INSPECTION]  # type: ignore[assignment]
    mqtt = MqttPublisher(settings.mqtt, ctx.station, inspection.counts,
                         lambda: store.zones) if settings.mqtt.mqtt else None
    if mqtt is not None:
        sinks.append(mqtt)
    out = settings.output
    harvester = (Harvester(out.harvest_dir, round(out.harvest_max_mb * 2**20))
                 if out.harvest_dir is not None else None)
    if harvester is not None:
        sinks.append(harvester)
    ctx.outputs.sinks.extend([*sinks, *extra])
    scheduler = Scheduler([], inference.pool, ctx.cond, ctx.stop, on_result=ctx.result,
                          on_stream_done=ctx.stream_done, paused=ctx.paused)
    units = {name: _unit(settings.stream(name), probes[name], processors[name], ctx, scheduler)
             for name in STREAMS}
    watcher = ZoneWatcher(source, placement, store, ctx.stop, ctx.event)
    return Pipeline(settings, inference, units, ctx=ctx, scheduler=scheduler, zone_store=store,
                    zone_watcher=watcher, events=events, recorders=recorders, mqtt=mqtt,
                    harvester=harvester)


def summary_line(summary: dict[str, Any]) -> str:
    """The summary as one JSON line, like the event log's last line."""
    return json.dumps(summary, separators=(",", ":"))
