"""The whole run, wired: capture threads -> scheduler workers -> output thread.

The headless run, the benchmark and the window all drive this one object.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from coral_mfg.capture import (
    STALL_S,
    FrameSlot,
    Opener,
    SourceKind,
    SourceSupervisor,
    probe_source,
    source_fps,
    source_kind,
)
from coral_mfg.inference.engine import InferenceEngine, ModelPlan, plan_models
from coral_mfg.inference.runtime import Device, Runtime
from coral_mfg.inspection import VisualInspection
from coral_mfg.outputs import EventLog, OutputThread, SideBySideRecorder, Sink
from coral_mfg.results import STREAMS, VISUAL_INSPECTION, WORKER_SAFETY, FrameResult
from coral_mfg.safety import WorkerSafety, ZoneStore
from coral_mfg.scheduler import Scheduler, StreamProcessor, StreamState
from coral_mfg.zone_watch import ZoneWatcher
from coral_mfg.zones import KeepoutZone, zones_from_settings

log = logging.getLogger(__name__)

JOIN_S = 1.5
STATS_EVERY_S = 60.0
#: CPU layout: one interpreter pair per stream (a stream is never processed by
#: two workers at once), each with cores/2 threads. On 2 cores, 2 pairs x 1
#: thread beat 1 pair x 2 threads (``coral-mfg bench --workers N --cpu_threads T``).
CPU_WORKERS = 2


def default_cpu_threads() -> int:
    return max(1, (os.cpu_count() or CPU_WORKERS) // CPU_WORKERS)
EDGETPU_WORKERS = 1


def open_engines(settings: dict[str, Any], plan: ModelPlan | None = None) -> list[InferenceEngine]:
    """One engine per worker: a single one on an Edge TPU, which serializes anyway."""
    plan = plan or plan_models(settings)
    runtime = Runtime(
        requested=Device(settings["device"]),
        device_string=settings.get("edgetpu_device"),
        cpu_threads=settings["cpu_threads"] or default_cpu_threads(),
    )
    first = InferenceEngine(plan, runtime)
    on_tpu = Device.EDGETPU in (first.detector_choice.device, first.classifier_choice.device)
    count = EDGETPU_WORKERS if on_tpu else (settings.get("workers") or CPU_WORKERS)
    engines = [first]
    for _ in range(1, count):
        engines.append(InferenceEngine(plan, runtime))
    return engines


@dataclass
class Pipeline:
    settings: dict[str, Any]
    engines: list[InferenceEngine]
    zones: tuple[KeepoutZone, ...]
    started: float = field(default_factory=time.monotonic)
    stop_event: threading.Event = field(default_factory=threading.Event)
    cond: threading.Condition = field(default_factory=threading.Condition)
    extra_sinks: list[Sink] = field(default_factory=list)
    #: how to open a stream's input, when not from its spec (custom sources, fault tests)
    openers: dict[str, Opener] = field(default_factory=dict)
    paused: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        s = self.settings
        self.out_size = (s["width"], s["height"])
        headless = bool(s.get("headless"))
        loop = s["loop"] if s.get("loop") is not None else not headless
        plan = self.engines[0].plan
        self.zone_store = ZoneStore(self.zones)
        self.safety = WorkerSafety(self.zone_store, plan.worker_threshold, self.out_size)
        self.inspection = VisualInspection(plan.inspection_threshold, self.out_size)
        processors: dict[str, StreamProcessor] = {
            WORKER_SAFETY: self.safety, VISUAL_INSPECTION: self.inspection
        }
        specs = {WORKER_SAFETY: s["worker_safety_input"],
                 VISUAL_INSPECTION: s["visual_inspection_input"]}
        self.capture_stops = {name: threading.Event() for name in STREAMS}
        self.captures: dict[str, SourceSupervisor] = {}
        self.states: list[StreamState] = []
        fps = []
        opened: list[Any] = []
        try:
            for name in STREAMS:
                opener = self.openers.get(name) or functools.partial(
                    probe_source, specs[name], *self.out_size, name
                )
                cap, first = opener()
                opened.append(cap)
                fps.append(source_fps(cap))
                kind = source_kind(specs[name])
                leaky = s["realtime"] or kind is not SourceKind.FILE
                slot = FrameSlot(self.cond, leaky=leaky)
                self.captures[name] = SourceSupervisor(
                    name, specs[name], slot, self.capture_stops[name], opener=opener,
                    realtime=s["realtime"], loop=loop, on_end=self._source_ended,
                    on_event=self._event, paused=self.paused, first=(cap, first),
                    stall_s=float(s.get("stall_seconds") or STALL_S),
                )
                self.states.append(StreamState(processors[name], slot, s.get("max_frames") or 0))
        except BaseException:
            for cap in opened:
                cap.release()
            raise
        sinks: list[Sink] = []
        self.events: EventLog | None = None
        if s.get("events"):
            self.events = EventLog(Path(s["events"]), self.started)
            sinks.append(self.events)
        self.recorder: SideBySideRecorder | None = None
        if s.get("output"):
            self.recorder = SideBySideRecorder(
                Path(s["output"]), self.out_size, max(fps), lambda: self.zone_store.zones,
                bool(s["anonymize"]),
            )
            sinks.append(self.recorder)
        self.outputs = OutputThread([*sinks, *self.extra_sinks], self.stop_event)
        self.ended_streams: list[str] = []
        self.scheduler = Scheduler(
            self.states, self.engines, self.cond, self.stop_event,
            on_result=self._result, on_stream_done=self._stream_done, paused=self.paused,
        )
        self._closed = False
        source = self.zones[0].source if self.zones else None
        self.zone_watcher = (
            ZoneWatcher(s, self.zone_store, source, self.stop_event, self._event)
            if source is not None else None
        )
        self._stats_at = time.monotonic()
        self._stats_frames: dict[str, int] = {}

    # callbacks, from worker and capture threads
    def _result(self, result: FrameResult) -> None:
        self.outputs.put(result)

    def _event(self, record: dict[str, Any]) -> None:
        """A source event (lost, restored) for the event log, in order with the frames."""
        self.outputs.put({**record, "time": round(time.monotonic() - self.started, 4)})

    def status(self, stream: str) -> str | None:
        """Why a stream shows no live video now (for the screen), or None."""
        source = self.captures[stream]
        if source.lost_reason is not None:
            return f"NO SIGNAL: {source.lost_reason}"
        state = next(st for st in self.states if st.processor.name == stream)
        if state.failing:
            return f"ERROR: {state.consecutive_errors} frames failed ({state.last_error})"
        return None

    def zone_warning(self) -> str | None:
        """A refused zone edit, shown on the safety pane until a good one replaces it."""
        return self.zone_store.error

    def _stream_done(self, name: str) -> None:
        """Called with the scheduler's lock held: only flag, never block."""
        self.capture_stops[name].set()
        self.ended_streams.append(name)

    def _source_ended(self, name: str) -> None:
        self.scheduler.source_ended(name)

    def set_paused(self, paused: bool) -> None:
        """Hold capture (files keep their place) and inference; the window stays live."""
        if paused:
            self.paused.set()
        else:
            self.paused.clear()
        with self.cond:
            self.cond.notify_all()

    def log_stats(self, every_s: float = STATS_EVERY_S) -> None:
        """Once a minute per stream: fps, drops, errors and source losses."""
        now = time.monotonic()
        if now - self._stats_at < every_s:
            return
        span = now - self._stats_at
        self._stats_at = now
        for st in self.states:
            name = st.processor.name
            done = st.processor.processed - self._stats_frames.get(name, 0)
            self._stats_frames[name] = st.processor.processed
            log.info("%s: %.1f fps, %d dropped, %d errors, %d source losses%s", name,
                     done / span, self.captures[name].dropped, st.errors,
                     self.captures[name].lost_count,
                     f" ({self.status(name)})" if self.status(name) else "")

    def start(self) -> None:
        self.started = time.monotonic()
        if self.events is not None:
            self.events.started = self.started
        self.safety.started = self.started
        self.outputs.start()
        self.scheduler.start()
        if self.zone_watcher is not None:
            self.zone_watcher.start()
        for t in self.captures.values():
            t.start()

    def poll(self, timeout: float) -> bool:
        """Wait up to ``timeout``; True once every stream is finished."""
        done = self.scheduler.wait_done(timeout)
        self.log_stats()
        while self.ended_streams:
            self.outputs.put(self.ended_streams.pop(0))
        return done

    @property
    def device(self) -> str:
        return self.engines[0].device.value

    def dropped(self) -> dict[str, int]:
        return {name: t.dropped for name, t in self.captures.items()}

    def summary(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        frames = {st.processor.name: st.processor.processed for st in self.states}
        return {
            "type": "summary",
            "frames": frames,
            "dropped": self.dropped(),
            "apples": self.inspection.counts(),
            "keepout_violations": self.safety.violations,
            "violations_by_zone": dict(self.safety.debounce.violations),
            "fps": {k: round(v / elapsed, 2) for k, v in frames.items()},
            "errors": {st.processor.name: st.errors for st in self.states},
            "source_lost": {name: c.lost_count for name, c in self.captures.items()},
            "device": self.device,
        }

    def close(self) -> dict[str, Any]:
        """Stop everything, drain outputs, write the summary; safe to call twice."""
        if self._closed:
            return self.summary()
        self._closed = True
        self.stop_event.set()
        for ev in self.capture_stops.values():
            ev.set()
        self.scheduler.join(JOIN_S)
        for t in (*self.captures.values(), self.zone_watcher):
            if t is not None and t.ident is not None:  # started
                t.join(JOIN_S)
        while self.ended_streams:
            self.outputs.put(self.ended_streams.pop(0))
        self.outputs.finish(JOIN_S * 2)
        summary = self.summary()
        if self.recorder is not None:
            self.recorder.close()
        if self.events is not None:
            self.events.event(summary)
            self.events.close()
        alive = [t.name for t in (*self.captures.values(), self.outputs) if t.is_alive()]
        if alive:
            log.warning("threads still running at exit: %s", ", ".join(alive))
        return summary


def build_pipeline(
    settings: dict[str, Any],
    extra_sinks: list[Sink] | None = None,
    openers: dict[str, Opener] | None = None,
) -> Pipeline:
    zones = zones_from_settings(settings)
    # OpenCV's own thread pool splits each small resize across cores that inference
    # already keeps busy; one thread measured 3 % more frames/s on 2 cores.
    cv2.setNumThreads(1)
    engines = open_engines(settings)
    log.info("versions: python %s, numpy %s, opencv %s, %s %s", platform.python_version(),
             np.__version__, cv2.__version__, engines[0].runtime.backend.name,
             engines[0].runtime.backend.version)
    for line in engines[0].describe():
        log.info("%s", line)
    log.info("inputs: worker safety %s; visual inspection %s", settings["worker_safety_input"],
             settings["visual_inspection_input"])
    log.info("detector: %s; thresholds worker %.2f, inspection %.2f; %d worker(s)",
             engines[0].plan.note, engines[0].plan.worker_threshold,
             engines[0].plan.inspection_threshold, len(engines))
    log.info("keep-out zones: %s", "; ".join(
        f"{z.name} ({z.mode}, enter {z.enter_frames}, exit {z.exit_frames}"
        f"{'' if z.enabled else ', disabled'}) from {z.source.path if z.source else '-'}"
        for z in zones))
    return Pipeline(settings, engines, zones, extra_sinks=list(extra_sinks or []),
                    openers=dict(openers or {}))

