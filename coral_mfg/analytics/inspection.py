"""Visual inspection: objects of the inspected detector classes (apples by default)
cropped from the full-resolution frame and graded.

Each object is tracked, and its grade is a vote over all the frames it was seen
on, so the verdict reported on every frame is the object's, not the frame's.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from coral_mfg.analytics.tracking import Tracker
from coral_mfg.config.settings import TrackingConfig
from coral_mfg.core.detections import Detections, as_box, iou_matrix, pixel_boxes
from coral_mfg.core.events import Graded, Stamper
from coral_mfg.core.frame import Frame
from coral_mfg.core.geometry import letterbox
from coral_mfg.core.results import (
    Box,
    Candidates,
    FrameResult,
    InspectedObject,
    SnapshotRequest,
    StageTimes,
)
from coral_mfg.inference.lane import InferenceLane
from coral_mfg.inference.plan import Labels

MIN_CROP_PX = 8


@dataclass
class Votes:
    """One object's grades summed over the frames it was graded on: its verdict is the
    grade with the most score, so one odd frame does not decide it."""

    sums: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    count: int = 0

    def add(self, scores: npt.NDArray[np.floating]) -> None:
        if self.sums.shape != scores.shape:
            self.sums = np.zeros(scores.shape, dtype=np.float64)
        self.sums += scores
        self.count += 1

    @property
    def verdict(self) -> int | None:
        if self.sums.size == 0 or not self.sums.any():
            return None
        return int(np.argmax(self.sums))

    @property
    def score(self) -> float:
        """Mean score of the winning grade over the graded frames."""
        return float(self.sums.max() / self.count) if self.count else 0.0


@dataclass(frozen=True)
class InspectionPart:
    """What the inspection role made of one frame."""

    objects: tuple[InspectedObject, ...]
    events: tuple[Graded, ...]
    snapshots: tuple[SnapshotRequest, ...]
    graded: tuple[int, ...]  # which objects were graded on this frame


@dataclass
class InspectionRole:
    """A camera's inspection role: objects of its inspected labels, cropped from the
    full-resolution frame, graded, tracked, and voted over their frames.

    ``finish`` runs for one frame after the other, in order, under ``lock`` (the
    camera's), which :meth:`flush` and :meth:`counts` take too.
    """

    camera: str
    tracker: Tracker
    out_size: tuple[int, int]
    tracking: TrackingConfig
    stamper: Stamper
    labels: Labels
    lock: threading.Lock
    #: per live track, how often the detector gave each name to its object: the most
    #: frequent is the object's label, so one frame's odd name does not rename it
    track_labels: dict[int, Counter[str]] = field(default_factory=dict)
    #: per live track, the last frame it was graded on and its box there: the picture
    #: of its ``graded`` event; dropped when the track ends, so memory stays bounded
    last_graded: dict[int, tuple[FrameResult, Box]] = field(default_factory=dict)
    last_frame: int = -1  # the index of the last frame finished: the frame of final verdicts
    #: per live track, its votes
    votes: dict[int, Votes] = field(default_factory=dict)
    #: objects that ended, counted by verdict (None: never graded); only counts are kept,
    #: so memory stays flat however long the run
    ended_verdicts: dict[int | None, int] = field(default_factory=dict)
    classifier: int = 0  # which classifier grades: 0 the co-compiled one, else a camera's own

    def infer(self, frame: Frame, detections: Detections, lane: InferenceLane,
              times: StageTimes) -> Candidates:
        """The frame's objects and the grades of their crops (full resolution).

        Weak detections are graded only where a track expects an object: they
        can only continue a track, and grading costs a classifier call each.
        """
        t = self.tracking
        found = detections.of_classes(self.labels.inspected, self.tracker.low)
        # an apple also scored as an orange is one object to grade
        found = found.deduplicated(t.duplicate_iou, t.duplicate_inside, by_class=False)
        crops = [as_box(c) for c in pixel_boxes(found.xyxy, frame.size)]
        wanted = self._worth_grading(found, frame)
        graded = [i for i, (x1, y1, x2, y2) in enumerate(crops)
                  if wanted[i] and x2 - x1 >= MIN_CROP_PX and y2 - y1 >= MIN_CROP_PX]
        grades: list[npt.NDArray[np.float32] | None] = [None] * len(found)
        if graded:
            scores = lane.class_scores(frame.image, [crops[i] for i in graded], times,
                                       self.classifier)
            for row, i in enumerate(graded):
                grades[i] = scores[row]
        return Candidates(found, tuple(grades), tuple(crops))

    def _worth_grading(self, found: Detections, frame: Frame) -> npt.NDArray[np.bool_]:
        confident = found.scores > self.tracker.high
        expected = self.tracker.predictions()
        if not len(expected) or confident.all():
            return confident
        out = found.placed(letterbox(self.out_size, frame.size), self.out_size).xyxy
        near = (iou_matrix(out, expected) >= self.tracker.min_iou).any(axis=1)
        return np.asarray(confident | near, dtype=bool)

    def finish(self, frame: Frame, part: Candidates) -> InspectionPart:
        """Tracks and their votes; the graded events of the objects that ended."""
        found = part.found
        picture = letterbox(self.out_size, frame.size)
        seen = self.tracker.update(found.placed(picture, self.out_size).xyxy, found.scores)
        boxes = pixel_boxes(np.array([o.box for o in seen]).reshape(-1, 4), self.out_size)
        objects: list[InspectedObject] = []
        graded: list[int] = []
        for box, obs in zip(boxes, seen, strict=True):
            i = obs.detection
            scores = part.grades[i] if i is not None else None
            names = self.track_labels.setdefault(obs.track.id, Counter())
            if i is not None:
                names[self._label(int(found.class_ids[i]))] += 1
            votes = self.votes.setdefault(obs.track.id, Votes())
            if scores is not None:
                votes.add(scores)
                graded.append(len(objects))
            verdict = votes.verdict
            objects.append(InspectedObject(
                _most_common(names), obs.score, as_box(box),
                self._grade(verdict), None if verdict is None else votes.score,
                obs.track.id, obs.predicted, self._passed(verdict),
                None if scores is None else self._grade(int(np.argmax(scores))),
                None if scores is None or i is None else part.crops[i],
                self.tracker.is_counted(obs.track)))
        self.last_frame = frame.index
        events, snapshots = self._ended()
        return InspectionPart(tuple(objects), events, snapshots, tuple(graded))

    def remember(self, result: FrameResult, part: InspectionPart) -> None:
        """The frame each graded object was last graded on: its ``graded`` picture."""
        for i in part.graded:
            obj = part.objects[i]
            self.last_graded[obj.track] = (result, obj.box)

    def _label(self, class_id: int) -> str:
        return self.labels.inspected.get(class_id, str(class_id))

    def _grade(self, verdict: int | None) -> str | None:
        if verdict is None:
            return None
        return self.labels.classifier.get(verdict, str(verdict))

    def _passed(self, verdict: int | None) -> bool | None:
        if verdict is None:
            return None
        return verdict in self.labels.passing

    def flush(self) -> tuple[tuple[Graded, ...], tuple[SnapshotRequest, ...]]:
        """The run is stopping: every object still in view ends now, with its ``graded``
        event, so the events written agree with the counts on every way a run ends."""
        with self.lock:
            self.tracker.end_all()
            return self._ended()

    def _ended(self) -> tuple[tuple[Graded, ...], tuple[SnapshotRequest, ...]]:
        """A ``graded`` event for each object whose track ended with a verdict: its
        verdict is final then, and agrees with the counts."""
        events, snapshots = [], []
        for track in self.tracker.take_ended():
            last = self.last_graded.pop(track.id, None)
            label = _most_common(self.track_labels.pop(track.id, Counter()))
            votes = self.votes.pop(track.id, Votes())
            verdict = votes.verdict
            if not self.tracker.is_counted(track):
                continue
            self.ended_verdicts[verdict] = self.ended_verdicts.get(verdict, 0) + 1
            if verdict is None:
                continue
            stamp = self.stamper.stamp()
            event = Graded(label=label, track=track.id, grade=self._grade(verdict) or "",
                           passed=bool(self._passed(verdict)),
                           grade_score=round(votes.score, 4), frames=track.hits,
                           graded_frames=votes.count, frame=self.last_frame,
                           stream=self.camera, stamp=stamp,
                           snapshot=self.stamper.picture(Graded.type, stamp, self.camera)
                           if last is not None else None)
            events.append(event)
            if last is not None and event.snapshot is not None:
                snapshots.append(SnapshotRequest(event, last[0], last[1]))
        return tuple(events), tuple(snapshots)

    def counts(self) -> dict[str, int]:
        """Objects seen on enough frames to count, ended or in view, by their verdict's
        grade name; every grade is listed, so a zero is a zero, not a gap."""
        with self.lock:
            verdicts = dict(self.ended_verdicts)
            for track in self.tracker.tracks:
                if self.tracker.is_counted(track):
                    v = self.votes[track.id].verdict if track.id in self.votes else None
                    verdicts[v] = verdicts.get(v, 0) + 1
        counts = dict.fromkeys(self.labels.classifier.values(), 0)
        for verdict, n in verdicts.items():
            name = self._grade(verdict)
            if name is not None:
                counts[name] = counts.get(name, 0) + n
        return counts


def _most_common(names: Counter[str]) -> str:
    return names.most_common(1)[0][0] if names else ""
