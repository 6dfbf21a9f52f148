"""The whole run, wired: capture threads -> scheduler workers -> output thread.

The headless run, the benchmark and the window all drive this one object.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from coral_mfg.capture import CaptureThread, FrameSlot, SourceKind, probe_source, source_kind
from coral_mfg.inference.engine import InferenceEngine, ModelPlan, plan_models
from coral_mfg.inference.runtime import Device, Runtime
from coral_mfg.inspection import VisualInspection
from coral_mfg.outputs import EventLog, OutputThread, SideBySideRecorder
from coral_mfg.results import STREAMS, VISUAL_INSPECTION, WORKER_SAFETY, FrameResult
from coral_mfg.safety import WorkerSafety
from coral_mfg.scheduler import Scheduler, StreamProcessor, StreamState
from coral_mfg.zones import KeepoutZone, load_csv_zone

log = logging.getLogger(__name__)

JOIN_S = 1.5
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
    wanted = settings.get("workers") or (EDGETPU_WORKERS if on_tpu else CPU_WORKERS)
    engines = [first]
    for _ in range(1, EDGETPU_WORKERS if on_tpu else wanted):
        engines.append(InferenceEngine(plan, runtime))
    return engines


@dataclass
class Pipeline:
    settings: dict[str, Any]
    engines: list[InferenceEngine]
    zone: KeepoutZone
    started: float = field(default_factory=time.monotonic)
    stop_event: threading.Event = field(default_factory=threading.Event)
    cond: threading.Condition = field(default_factory=threading.Condition)
    extra_sinks: list[Any] = field(default_factory=list)
    paused: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        s = self.settings
        self.out_size = (s["width"], s["height"])
        headless = bool(s.get("headless"))
        loop = s["loop"] if s.get("loop") is not None else not headless
        plan = self.engines[0].plan
        self.safety = WorkerSafety(self.zone, plan.worker_threshold, self.out_size)
        self.inspection = VisualInspection(plan.inspection_threshold, self.out_size)
        processors: dict[str, StreamProcessor] = {
            WORKER_SAFETY: self.safety, VISUAL_INSPECTION: self.inspection
        }
        specs = {WORKER_SAFETY: s["worker_safety_input"],
                 VISUAL_INSPECTION: s["visual_inspection_input"]}
        self.capture_stops = {name: threading.Event() for name in STREAMS}
        self.captures: dict[str, CaptureThread] = {}
        self.states: list[StreamState] = []
        fps = []
        try:
            for name in STREAMS:
                cap, first = probe_source(specs[name], *self.out_size)
                kind = source_kind(specs[name])
                leaky = s["realtime"] or kind is not SourceKind.FILE
                slot = FrameSlot(self.cond, leaky=leaky)
                thread = CaptureThread(
                    name, specs[name], cap, slot, self.capture_stops[name],
                    realtime=s["realtime"], loop=loop, on_end=self._source_ended,
                    first=first, paused=self.paused,
                )
                fps.append(thread.fps)
                self.captures[name] = thread
                self.states.append(StreamState(processors[name], slot, s.get("max_frames") or 0))
        except BaseException:
            for t in self.captures.values():
                t.cap.release()
            raise
        sinks: list[Any] = []
        self.events: EventLog | None = None
        if s.get("events"):
            self.events = EventLog(Path(s["events"]), self.started)
            sinks.append(self.events)
        self.recorder: SideBySideRecorder | None = None
        if s.get("output"):
            self.recorder = SideBySideRecorder(
                Path(s["output"]), self.out_size, max(fps), (self.zone,), bool(s["anonymize"])
            )
            sinks.append(self.recorder)
        self.outputs = OutputThread([*sinks, *self.extra_sinks], self.stop_event)
        self.ended_streams: list[str] = []
        self.scheduler = Scheduler(
            self.states, self.engines, self.cond, self.stop_event,
            on_result=self._result, on_stream_done=self._stream_done, paused=self.paused,
        )
        self._closed = False

    # callbacks, from worker and capture threads
    def _result(self, result: FrameResult) -> None:
        self.outputs.put(result)

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

    def start(self) -> None:
        self.started = time.monotonic()
        if self.events is not None:
            self.events.started = self.started
        self.outputs.start()
        self.scheduler.start()
        for t in self.captures.values():
            t.start()

    def poll(self, timeout: float) -> bool:
        """Wait up to ``timeout``; True once every stream is finished."""
        done = self.scheduler.wait_done(timeout)
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
            "fps": {k: round(v / elapsed, 2) for k, v in frames.items()},
            "errors": {st.processor.name: st.errors for st in self.states},
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
        for t in self.captures.values():
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


def build_pipeline(settings: dict[str, Any], extra_sinks: list[Any] | None = None) -> Pipeline:
    out_size = (settings["width"], settings["height"])
    zone = load_csv_zone(
        Path(settings["keepout_points_path"]), out_size, bool(settings["safety_check_whole_box"])
    )
    engines = open_engines(settings)
    for line in engines[0].describe():
        log.info("%s", line)
    log.info("detector: %s; thresholds worker %.2f, inspection %.2f; %d worker(s)",
             engines[0].plan.note, engines[0].plan.worker_threshold,
             engines[0].plan.inspection_threshold, len(engines))
    return Pipeline(settings, engines, zone, extra_sinks=list(extra_sinks or []))


def video_info(path: Path) -> tuple[int, int, int, float]:
    """(width, height, frame count, fps) of a video file, as OpenCV reads it."""
    cap = cv2.VideoCapture(str(path))
    try:
        return (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS)))
    finally:
        cap.release()
