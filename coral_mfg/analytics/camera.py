"""One camera's work on a frame: one detection serves every role the camera has.

``infer`` (the models; several frames of a camera may be in it at once)
detects once and lets each role take what it needs: people for safety,
inspected objects and their grades for inspection. ``finish`` (one frame
after the other, in order) tracks and checks them. A frame the motion gate
or the ``detect_fps`` cap holds back is not detected on, and is counted: its
people are the last detection's, checked again against the zones (a person
standing still in a zone stays in it, and the entry debounce counts the frame),
and its inspected objects are the last ones shown (a crop already graded is not
voted on twice).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from coral_mfg.analytics.inspection import InspectionRole
from coral_mfg.analytics.motion import MotionGate
from coral_mfg.analytics.safety import SafetyRole
from coral_mfg.core.detections import Detections
from coral_mfg.core.events import Event
from coral_mfg.core.frame import Frame
from coral_mfg.core.results import (
    FrameResult,
    Inferred,
    InspectedObject,
    PersonObject,
    SnapshotRequest,
    StageTimes,
)
from coral_mfg.inference.lane import InferenceLane


@dataclass
class CameraProcessor:
    """A camera's processor for the scheduler: see the module's docstring."""

    name: str
    out_size: tuple[int, int]
    lock: threading.Lock
    safety: SafetyRole | None = None
    inspection: InspectionRole | None = None
    gate: MotionGate | None = None
    detect_interval: float = 0.0  # seconds between detections at most (0: every frame)
    processed: int = 0
    skipped: int = 0  # frames held by the gate or the cap, not detected on
    _people: Detections | None = None  # the last detection's people
    _held: tuple[InspectedObject, ...] = ()  # the last inspected objects shown
    _detected_at: float = field(default=-1e9)
    _skip_lock: threading.Lock = field(default_factory=threading.Lock)

    def infer(self, frame: Frame, lane: InferenceLane) -> Inferred:
        times = StageTimes(decode=frame.decode_ms)
        if self._hold(frame):
            return Inferred(lane.device.value, times, skipped=True)
        detections = lane.detect(frame.image, times)
        people = self.safety.people(detections) if self.safety is not None else None
        found = (self.inspection.infer(frame, detections, lane, times)
                 if self.inspection is not None else None)
        return Inferred(lane.device.value, times, people=people, found=found)

    def _hold(self, frame: Frame) -> bool:
        """Whether to skip detection on ``frame``: too soon for the cap, or no motion."""
        with self._skip_lock:
            if frame.captured - self._detected_at < self.detect_interval:
                return True
            if self.gate is not None and not self.gate.moved(frame):
                return True
            self._detected_at = frame.captured
            return False

    def finish(self, frame: Frame, inferred: Inferred) -> FrameResult:
        t0 = time.perf_counter()
        with self.lock:
            objects: list[PersonObject | InspectedObject] = []
            events: list[Event] = []
            snapshots: list[SnapshotRequest] = []
            zones = self.safety.outlines() if self.safety is not None else ()
            if inferred.skipped:
                self.skipped += 1
            else:
                self._people = inferred.people
            if self.safety is not None and self._people is not None:
                safe = self.safety.finish(frame, self._people)
                objects += safe.objects
                events += safe.events
                snapshots += safe.snapshots
                zones = safe.zones
            inspected = None
            if self.inspection is not None and inferred.found is not None:
                inspected = self.inspection.finish(frame, inferred.found)
                self._held = inspected.objects
                events += inspected.events
                snapshots += inspected.snapshots
            objects += self._held
            inferred.times.checks = (time.perf_counter() - t0) * 1000.0
            result = FrameResult(frame, self.out_size, inferred.device, tuple(objects),
                                 inferred.times, tuple(events), tuple(snapshots), zones)
            if self.inspection is not None and inspected is not None:
                self.inspection.remember(result, inspected)
            self.processed += 1
            return result
