"""What a processed frame produced: typed objects that the outputs serialize and draw."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from coral_mfg.core.detections import Detections
from coral_mfg.core.events import (
    Event,
    Graded,
    KeepoutEnter,
    PresenceMissing,
    ZoneDwellExceeded,
    frame_record,
)
from coral_mfg.core.frame import Frame
from coral_mfg.core.geometry import Rect, letterbox

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in output-frame pixels



@dataclass(frozen=True)
class PersonObject:
    """A tracked person on one frame, with the zones they are in after the debounce."""

    score: float
    box: Box
    keepout: bool  # in any zone (debounced)
    track: int
    zones: tuple[str, ...] = ()
    predicted: bool = False  # not detected on this frame: where its track expects it
    confirmed: bool = True  # seen on enough frames to be a real person (lines count it)

    def record(self) -> dict[str, Any]:
        return {"label": "person", "score": round(self.score, 4), "box": list(self.box),
                "keepout": self.keepout, "zones": list(self.zones), "track": self.track,
                "predicted": self.predicted}


@dataclass(frozen=True)
class InspectedObject:
    """A tracked inspected object on one frame, with its running verdict."""

    label: str  # the detector's name for it
    score: float
    box: Box
    grade: str | None  # the object's running verdict, a vote over its frames
    grade_score: float | None
    track: int
    predicted: bool = False  # not detected on this frame: where its track expects it
    passed: bool | None = None  # whether the verdict is a passing grade
    #: this frame's own grade of the crop and the crop in frame pixels, when graded on it
    frame_grade: str | None = None
    crop: Box | None = None
    confirmed: bool = True  # seen on enough frames to be a real object (lines count it)
    #: the object's anomaly score (a vote over its scored frames; 1.0 is the threshold)
    #: and verdict, once it was scored on a frame; None without anomaly scoring
    anomaly_score: float | None = None
    anomalous: bool | None = None

    def record(self) -> dict[str, Any]:
        score = None if self.grade_score is None else round(self.grade_score, 4)
        out = {"label": self.label, "score": round(self.score, 4), "box": list(self.box),
               "grade": self.grade, "grade_score": score, "track": self.track,
               "predicted": self.predicted}
        if self.anomaly_score is not None:
            out.update(anomaly_score=round(self.anomaly_score, 4), anomalous=self.anomalous)
        return out


@dataclass
class StageTimes:
    """Milliseconds per stage for one frame; the benchmark reports their medians."""

    decode: float = 0.0
    preprocess: float = 0.0
    detect: float = 0.0
    classify: float = 0.0
    checks: float = 0.0
    output: float = 0.0


@dataclass(frozen=True, eq=False)
class Candidates:
    """The inspection role's part of a frame before tracking: its objects, one box each
    (frame pixels), and per object the scores of its crop, the crop itself, and its crop's
    anomaly score when it was scored on this frame."""

    found: Detections
    grades: tuple[npt.NDArray[np.float32] | None, ...]
    crops: tuple[Box, ...]
    anomaly: tuple[float | None, ...] = ()


@dataclass(frozen=True, eq=False)
class Inferred:
    """What the models said about one frame, before the camera's in-order bookkeeping.

    Inference of a camera's frames may overlap; tracking, zones and votes then
    take the frames strictly in order (see the scheduler). ``people`` is the
    safety role's part, ``found`` the inspection role's (its objects, their
    grades and crops); ``skipped``: the frame was held, not detected on.
    """

    device: str
    times: StageTimes
    people: Detections | None = None
    found: Candidates | None = None
    present: Detections | None = None  # objects of the presence checks' labels
    skipped: bool = False


@dataclass(frozen=True, eq=False)
class SnapshotRequest:
    """A picture to save for an event: the annotated pane of ``result`` (None: the
    result that carries the request), and the object's crop when ``crop`` is set."""

    #: the event the picture belongs to; it names the file
    event: KeepoutEnter | ZoneDwellExceeded | PresenceMissing | Graded
    result: FrameResult | None = None
    crop: Box | None = None


@dataclass(frozen=True)
class ZoneOutline:
    """A zone as drawn over a frame: the zones a frame was checked against travel with its
    result, so every picture of it shows exactly those."""

    name: str
    points: tuple[tuple[float, float], ...]  # output-frame pixels
    color: tuple[int, int, int]  # RGB


@dataclass(frozen=True, eq=False)
class FrameResult:
    """What processing one frame produced; it crosses from the scheduler to every output."""

    frame: Frame
    out_size: tuple[int, int]
    device: str
    objects: tuple[PersonObject | InspectedObject, ...]
    times: StageTimes = field(default_factory=StageTimes)
    events: tuple[Event, ...] = ()  # e.g. keepout_enter / keepout_exit
    snapshots: tuple[SnapshotRequest, ...] = ()
    zones: tuple[ZoneOutline, ...] = ()  # the enabled zones in force (safety streams)

    @property
    def stream(self) -> str:
        return self.frame.stream

    @property
    def picture(self) -> Rect:
        """Where the frame lies in the output frame (letterboxed, never stretched)."""
        return letterbox(self.out_size, self.frame.size)

    def record(self, since: float) -> dict[str, Any]:
        """The frame's line in the event log."""
        return frame_record(self.stream, self.frame.index, pts=self.frame.pts,
                            time=self.frame.captured - since, wall=self.frame.wall,
                            device=self.device, objects=[o.record() for o in self.objects])
