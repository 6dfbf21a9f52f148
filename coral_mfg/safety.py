"""Worker safety: people against keep-out zones, one track id per person."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coral_mfg.capture import Frame
from coral_mfg.detections import as_box, pixel_boxes
from coral_mfg.inference.engine import PERSON_ID, InferenceEngine
from coral_mfg.results import WORKER_SAFETY, FrameResult, PersonObject, StageTimes
from coral_mfg.tracking import IouTracker
from coral_mfg.zones import KeepoutZone


@dataclass
class WorkerSafety:
    zone: KeepoutZone
    threshold: float
    out_size: tuple[int, int]
    name: str = WORKER_SAFETY
    tracker: IouTracker = field(default_factory=IouTracker)
    processed: int = 0

    def process(self, frame: Frame, engine: InferenceEngine) -> FrameResult:
        times = StageTimes(decode=frame.decode_ms)
        dets = engine.detect(frame.image, self.out_size, times)
        t0 = time.perf_counter()
        people = dets.of_class(PERSON_ID, self.threshold)
        boxes = pixel_boxes(people.xyxy, self.out_size)
        inside = self.zone.contains_boxes(boxes)
        tracks = self.tracker.update(boxes.astype(np.float32))
        objects = []
        for box, score, hit, track in zip(boxes, people.scores, inside, tracks, strict=True):
            track.flagged |= bool(hit)
            objects.append(PersonObject(float(score), as_box(box), bool(hit), track.id))
        times.checks = (time.perf_counter() - t0) * 1000.0
        self.processed += 1
        return FrameResult(frame, self.out_size, engine.device.value, tuple(objects), times)

    @property
    def violations(self) -> int:
        """People (tracks) who were in the zone on at least one frame."""
        return sum(t.flagged for t in [*self.tracker.finished, *self.tracker.tracks])

    def summary(self) -> dict[str, Any]:
        return {"keepout_violations": self.violations}

