"""Visual inspection: objects of the inspected detector classes (apples by default)
cropped from the full-resolution frame and graded.

Each object is tracked, and its grade is a vote over all the frames it was seen
on, so the verdict reported on every frame is the object's, not the frame's.

With an anomaly model (``train-anomaly``), each crop's embedding is scored too
and the object's anomaly score is the mean over its scored frames (1.0 is the
threshold): an object above it is anomalous, whatever its grade, and fails. A
camera may run without a classifier: its verdicts are then ``normal`` or
``anomalous``.
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
from coral_mfg.core.events import Graded, Stamp, Stamper
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
from coral_mfg.inference.anomaly import AnomalyModel
from coral_mfg.inference.lane import InferenceLane
from coral_mfg.inference.plan import Labels

MIN_CROP_PX = 8
#: A camera without a classifier: its verdicts, by grade id.
ANOMALY_GRADES = {0: "normal", 1: "anomalous"}
NORMAL, ANOMALOUS = 0, 1
#: The count of anomalous objects, beside the grades' counts of a camera that grades.
ANOMALOUS_COUNT = "anomalous"


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


@dataclass
class AnomalyVotes:
    """One object's anomaly scores summed over the frames it was scored on: the mean
    decides, as the grade's sum does, so one odd frame does not."""

    total: float = 0.0
    count: int = 0

    def add(self, score: float) -> None:
        self.total += score
        self.count += 1

    @property
    def score(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def anomalous(self) -> bool | None:
        score = self.score
        return None if score is None else score > 1.0


@dataclass(frozen=True, eq=False)
class AnomalyScoring:
    """A camera's anomaly scoring: the model, the extractor's place among the crop models,
    and every how many frames with crops the extractor runs (1: each one)."""

    model: AnomalyModel
    extractor: int
    every: int = 1


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
    last_captured: float | None = None  # when that frame was captured (monotonic)
    #: per live track, its votes
    votes: dict[int, Votes] = field(default_factory=dict)
    #: objects that ended, counted by verdict (None: never graded); only counts are kept,
    #: so memory stays flat however long the run
    ended_verdicts: dict[int | None, int] = field(default_factory=dict)
    classifier: int = 0  # which classifier grades: 0 the co-compiled one, else a camera's own
    classify: bool = True  # False: no classifier, the verdict is normal or anomalous
    anomaly: AnomalyScoring | None = None
    #: per live track, its anomaly scores
    anomaly_votes: dict[int, AnomalyVotes] = field(default_factory=dict)
    #: objects that ended anomalous (with a classifier; without, their verdict says it)
    ended_anomalous: int = 0
    _crop_frames: int = 0  # frames with crops so far, for ``AnomalyScoring.every``
    _crop_lock: threading.Lock = field(default_factory=threading.Lock)

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
        anomaly: list[float | None] = [None] * len(found)
        scored = bool(graded) and self._score_now()
        models = ((self.classifier,) if self.classify else ()) + (
            (self.anomaly.extractor,) if scored and self.anomaly is not None else ())
        if graded and models:
            outputs = lane.crop_outputs(frame.image, [crops[i] for i in graded], models, times)
            if self.classify:
                for row, i in enumerate(graded):
                    grades[i] = outputs[0][row]
            if scored and self.anomaly is not None:
                values = self.anomaly.model.scores(outputs[-1])
                for row, i in enumerate(graded):
                    anomaly[i] = float(values[row])
        return Candidates(found, tuple(grades), tuple(crops), tuple(anomaly))

    def _score_now(self) -> bool:
        """Whether the extractor runs on this frame with crops: every ``every``-th one."""
        if self.anomaly is None:
            return False
        with self._crop_lock:
            turn = self._crop_frames
            self._crop_frames += 1
        return turn % self.anomaly.every == 0

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
            odd = part.anomaly[i] if i is not None and part.anomaly else None
            names = self.track_labels.setdefault(obs.track.id, Counter())
            if i is not None:
                names[self._label(int(found.class_ids[i]))] += 1
            votes = self.votes.setdefault(obs.track.id, Votes())
            if scores is not None:
                votes.add(scores)
            anomaly = (self.anomaly_votes.setdefault(obs.track.id, AnomalyVotes())
                       if self.anomaly is not None else None)
            if anomaly is not None and odd is not None:
                anomaly.add(odd)
            if scores is not None or (odd is not None and not self.classify):
                graded.append(len(objects))
            verdict = self._verdict(votes, anomaly)
            objects.append(InspectedObject(
                _most_common(names), obs.score, as_box(box),
                self._grade(verdict), None if verdict is None else self._score(votes, anomaly),
                obs.track.id, obs.predicted, self._passed(verdict, anomaly),
                self._frame_grade(scores, odd),
                None if i is None or (scores is None and odd is None) else part.crops[i],
                self.tracker.is_counted(obs.track),
                None if anomaly is None else anomaly.score,
                None if anomaly is None else anomaly.anomalous))
        self.last_frame = frame.index
        self.last_captured = frame.captured
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

    def _verdict(self, votes: Votes, anomaly: AnomalyVotes | None) -> int | None:
        """The object's grade id: the classifier's vote, or without a classifier whether it
        is anomalous."""
        if self.classify:
            return votes.verdict
        odd = None if anomaly is None else anomaly.anomalous
        return None if odd is None else (ANOMALOUS if odd else NORMAL)

    def _score(self, votes: Votes, anomaly: AnomalyVotes | None) -> float:
        """The verdict's score: the grade's, or without a classifier the anomaly score."""
        if self.classify or anomaly is None:
            return votes.score
        return anomaly.score or 0.0

    def _frame_grade(self, scores: npt.NDArray[np.float32] | None,
                     odd: float | None) -> str | None:
        if scores is not None:
            return self._grade(int(np.argmax(scores)))
        if odd is not None and not self.classify:
            return ANOMALY_GRADES[ANOMALOUS if odd > 1.0 else NORMAL]
        return None

    def _passed(self, verdict: int | None, anomaly: AnomalyVotes | None = None) -> bool | None:
        """A passing grade, and not anomalous: an anomalous object fails whatever its grade."""
        if verdict is None:
            return None
        return verdict in self.labels.passing and not (anomaly is not None
                                                       and anomaly.anomalous)

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
            anomaly = self.anomaly_votes.pop(track.id, None)
            verdict = self._verdict(votes, anomaly)
            if not self.tracker.is_counted(track):
                continue
            self.ended_verdicts[verdict] = self.ended_verdicts.get(verdict, 0) + 1
            odd = None if anomaly is None else anomaly.anomalous
            if odd and self.classify:
                self.ended_anomalous += 1
            if verdict is None:
                continue
            stamp = self.stamper.stamp()
            event = Graded(label=label, track=track.id, grade=self._grade(verdict) or "",
                           passed=bool(self._passed(verdict, anomaly)),
                           grade_score=round(self._score(votes, anomaly), 4),
                           frames=track.hits,
                           graded_frames=votes.count if self.classify else (
                               anomaly.count if anomaly is not None else 0),
                           frame=self.last_frame,
                           time=self.stamper.run_time(self.last_captured),
                           stream=self.camera, stamp=stamp,
                           snapshot=self._picture(stamp, odd) if last is not None else None,
                           anomaly_score=None if anomaly is None or anomaly.score is None
                           else round(anomaly.score, 4),
                           anomalous=odd)
            events.append(event)
            if last is not None and event.snapshot is not None:
                snapshots.append(SnapshotRequest(event, last[0], last[1]))
        return tuple(events), tuple(snapshots)

    def _picture(self, stamp: Stamp, anomalous: bool | None) -> str | None:
        """An anomalous object's picture (snapshot_anomalous), else a graded one's."""
        picture = (self.stamper.picture(ANOMALOUS_COUNT, stamp, self.camera) if anomalous
                   else None)
        return picture or self.stamper.picture(Graded.type, stamp, self.camera)

    def counts(self) -> dict[str, int]:
        """Objects seen on enough frames to count, ended or in view, by their verdict's
        grade name; every grade is listed, so a zero is a zero, not a gap. A camera that
        grades and scores anomalies counts its anomalous objects too (``anomalous``:
        they are counted under their grade as well)."""
        with self.lock:
            verdicts = dict(self.ended_verdicts)
            odd = self.ended_anomalous
            for track in self.tracker.tracks:
                if self.tracker.is_counted(track):
                    anomaly = self.anomaly_votes.get(track.id)
                    v = self._verdict(self.votes.get(track.id, Votes()), anomaly)
                    verdicts[v] = verdicts.get(v, 0) + 1
                    odd += bool(self.classify and anomaly is not None and anomaly.anomalous)
        counts = dict.fromkeys(self.labels.classifier.values(), 0)
        for verdict, n in verdicts.items():
            name = self._grade(verdict)
            if name is not None:
                counts[name] = counts.get(name, 0) + n
        if self.classify and self.anomaly is not None:
            counts[ANOMALOUS_COUNT] = odd
        return counts


def _most_common(names: Counter[str]) -> str:
    return names.most_common(1)[0][0] if names else ""
