"""One camera's work on a frame: one detection serves every role the camera has, its
counting lines and its presence checks.

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

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.analytics.inspection import InspectionRole
from coral_mfg.analytics.lines import CountingLine
from coral_mfg.analytics.motion import MotionGate
from coral_mfg.analytics.presence import PresenceCheck
from coral_mfg.analytics.safety import SafetyRole
from coral_mfg.core.detections import Detections
from coral_mfg.core.events import Event, LineCrossed, PresenceMissing, PresenceRestored, Stamper
from coral_mfg.core.frame import Frame
from coral_mfg.core.geometry import letterbox
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
    lines: tuple[CountingLine, ...] = ()
    presence: tuple[PresenceCheck, ...] = ()
    stamper: Stamper | None = None  # for the lines' and the presence checks' events
    #: a live source whose picture has not changed at all this long is frozen (None: a file)
    frozen_after: float | None = None
    processed: int = 0
    clock: float = 0.0  # the clock of the last frame finished (see Frame.clock)
    skipped: int = 0  # frames held by the gate or the cap, not detected on
    _thumb: bytes = b""  # the last frame, tiny: a picture identical for long is frozen
    _same_since: float | None = None
    _people: Detections | None = None  # the last detection's people
    _present: Detections | None = None  # the last detection's objects of presence labels
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
        present = None
        if self.presence:
            present = detections.of_classes({c.label_id for c in self.presence},
                                            min(c.spec.threshold for c in self.presence))
        return Inferred(lane.device.value, times, people=people, found=found, present=present)

    def _hold(self, frame: Frame) -> bool:
        """Whether to skip detection on ``frame``: too soon for the cap, or no motion."""
        with self._skip_lock:
            if frame.clock - self._detected_at < self.detect_interval:
                return True
            if self.gate is not None and not self.gate.moved(frame):
                return True
            self._detected_at = frame.clock
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
                self._present = inferred.present
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
            events += self._crossings(frame, objects)
            shots, changes = self._presence(frame)
            events += changes
            snapshots += shots
            inferred.times.checks = (time.perf_counter() - t0) * 1000.0
            zones = (*zones, *(line.outline for line in self.lines),
                     *(check.outline for check in self.presence))
            result = FrameResult(frame, self.out_size, inferred.device, tuple(objects),
                                 inferred.times, tuple(events), tuple(snapshots), zones)
            if self.inspection is not None and inspected is not None:
                self.inspection.remember(result, inspected)
            self.processed += 1
            self.clock = frame.clock
            self._watch_frozen(frame)
            return result

    def _watch_frozen(self, frame: Frame) -> None:
        """A live picture that does not change at all (sensor noise always changes some
        pixel) is a stuck encoder or a dead camera re-sending its last frame."""
        if self.frozen_after is None:
            return
        small = cv2.resize(frame.image, (32, 18), interpolation=cv2.INTER_AREA).tobytes()
        if small != self._thumb:
            self._thumb, self._same_since = small, None
        elif self._same_since is None:
            self._same_since = frame.clock

    @property
    def frozen_for(self) -> float:
        """Seconds the picture has not changed (0 while it changes, or for a file)."""
        since = self._same_since
        return 0.0 if since is None else self.clock - since

    def _crossings(self, frame: Frame, objects: list[PersonObject | InspectedObject]
                   ) -> list[Event]:
        """Each line's crossings on this frame: a person's feet, an object's centre."""
        if not self.lines:
            return []
        assert self.stamper is not None
        events: list[Event] = []
        live: set[tuple[str, int]] = set()
        for obj in objects:
            kind = "person" if isinstance(obj, PersonObject) else "object"
            live.add((kind, obj.track))
            if obj.predicted:
                continue  # where the track expects it, not where it was seen
            label = "person" if isinstance(obj, PersonObject) else obj.label
            x1, y1, x2, y2 = obj.box
            point = np.array([(x1 + x2) / 2, y2 if kind == "person" else (y1 + y2) / 2],
                             np.float64)
            for line in self.lines:
                if label not in line.labels:
                    continue
                crossing = line.update(kind, obj.track, point, obj.confirmed)
                if crossing is None:
                    continue
                grade = obj.grade if isinstance(obj, InspectedObject) else None
                passed = obj.passed if isinstance(obj, InspectedObject) else None
                line.count(crossing.direction, grade)
                stamp = self.stamper.stamp(frame.wall)
                events.append(LineCrossed(
                    line=line.name, direction=crossing.direction, track=obj.track, label=label,
                    frame=frame.index, time=self.stamper.run_time(frame.captured),
                    stream=self.name, stamp=stamp, grade=grade, passed=passed))
        for line in self.lines:
            line.forget(live)
        return events

    def _presence(self, frame: Frame) -> tuple[list[SnapshotRequest], list[Event]]:
        """Each check's count on this frame, and its changes once they have lasted."""
        if not self.presence:
            return [], []
        assert self.stamper is not None
        picture = letterbox(self.out_size, frame.size)
        present = self._present
        shots: list[SnapshotRequest] = []
        events: list[Event] = []
        for check in self.presence:
            centres: npt.NDArray[np.float64] = np.zeros((0, 2), np.float64)
            if present is not None and len(present):
                mine = present.select((present.class_ids == check.label_id)
                                      & (present.scores >= check.spec.threshold))
                boxes = np.asarray(mine.placed(picture, self.out_size).xyxy, np.float64)
                centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2,
                                    (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
            change = check.update(centres, frame.clock)
            if change is None:
                continue
            stamp = self.stamper.stamp(frame.wall)
            at = self.stamper.run_time(frame.captured)
            if change.missing:
                event = PresenceMissing(
                    check=change.check, label=change.label, expected=change.expected,
                    seen=change.seen, frame=frame.index, time=at, stream=self.name,
                    stamp=stamp,
                    snapshot=self.stamper.picture(PresenceMissing.type, stamp, self.name))
                events.append(event)
                if event.snapshot is not None:
                    shots.append(SnapshotRequest(event))
            else:
                events.append(PresenceRestored(
                    check=change.check, label=change.label, expected=change.expected,
                    seen=change.seen, frame=frame.index, time=at, stream=self.name,
                    stamp=stamp))
        return shots, events
