"""Tracking: one object keeps one id, through missed frames and low-score frames.

In the spirit of ByteTrack: confident detections start and continue tracks;
weaker ones (down to a floor) may only continue a track that is already there.
Each track predicts where its object will be (constant velocity), and is
matched there by an optimal assignment on box overlap (scipy's Hungarian
solver). A track the detector misses coasts on its prediction for a few frames
(still drawn, masked and counted in its zone) before it ends. What an object
is (its grade) is the inspection's business, not the tracker's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from coral_mfg.core.detections import Boxes, iou_matrix

#: Weight of the newest frame's motion in the velocity estimate.
VELOCITY_GAIN = 0.5


@dataclass
class Track:
    """One object followed across frames: where it is, how it moves, how it was graded."""

    id: int
    box: npt.NDArray[np.float64]  # x1, y1, x2, y2: last seen, or predicted while coasting
    score: float
    velocity: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(4))
    hits: int = 1
    misses: int = 0  # frames since last seen

    def predicted(self) -> npt.NDArray[np.float64]:
        return self.box + self.velocity

    def see(self, box: npt.NDArray[np.float64], score: float) -> None:
        motion = (box - self.box) / (self.misses + 1)
        self.velocity = VELOCITY_GAIN * motion + (1 - VELOCITY_GAIN) * self.velocity
        self.box, self.score = box, score
        self.hits += 1
        self.misses = 0

    def coast(self) -> None:
        self.box = self.predicted()
        self.misses += 1


@dataclass(frozen=True, eq=False)
class Observation:
    """A track on this frame: its box, and the detection that matched it (None: coasting)."""

    track: Track
    box: npt.NDArray[np.float64]
    score: float
    detection: int | None

    @property
    def predicted(self) -> bool:
        return self.detection is None


@dataclass
class Tracker:
    """ByteTrack-style tracks: ``high`` scores start and continue, ``low`` ones only continue."""

    high: float
    low: float = 0.15
    min_iou: float = 0.3
    coast_frames: int = 5  # a track unseen for longer ends
    min_hits: int = 3  # frames before a track counts as a real object
    coast_after_hits: int = 2  # a track seen once is not drawn on after a miss
    tracks: list[Track] = field(default_factory=list)
    #: keep ended tracks for :meth:`take_ended`; off, nothing is kept (a caller that never
    #: takes them must not collect a shift's worth)
    report_ended: bool = False
    ended: list[Track] = field(default_factory=list)
    _next_id: int = 1
    #: where the live tracks expect their objects next, made whole after each update:
    #: read by other threads (inference) while the next update runs
    _expected: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 4)))

    def update(self, boxes: Boxes, scores: npt.NDArray[np.floating]) -> list[Observation]:
        """Match this frame's detections; the live tracks, in track order."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64)
        high = np.flatnonzero(scores > self.high)
        low = np.flatnonzero((scores > self.low) & (scores <= self.high))
        matched: dict[int, int] = {}  # track index -> detection index
        free = list(range(len(self.tracks)))
        for candidates in (high, low):  # confident detections first
            pairs = self._assign(free, candidates, boxes)
            matched.update(pairs)
            free = [t for t in free if t not in pairs]
        seen: list[Observation] = []
        for t, track in enumerate(self.tracks):
            if t in matched:
                d = matched[t]
                track.see(boxes[d], float(scores[d]))
                seen.append(Observation(track, track.box, track.score, d))
            else:
                track.coast()
                if track.misses <= self.coast_frames and track.hits >= self.coast_after_hits:
                    seen.append(Observation(track, track.box, track.score, None))
        self._end_lost()
        used = set(matched.values())
        for new in (int(i) for i in high if int(i) not in used):
            track = Track(self._next_id, boxes[new].copy(), float(scores[new]))
            self._next_id += 1
            self.tracks.append(track)
            seen.append(Observation(track, track.box, track.score, new))
        self._expected = (np.stack([t.predicted() for t in self.tracks]) if self.tracks
                          else np.zeros((0, 4)))
        return sorted(seen, key=lambda o: o.track.id)

    def predictions(self) -> npt.NDArray[np.float64]:
        """Where the live tracks expect their objects next, as of the last update: a whole
        array, never a box of one frame with the motion of the next."""
        return self._expected

    def _assign(
        self, tracks: list[int], candidates: npt.NDArray[np.intp], boxes: npt.NDArray[np.float64]
    ) -> dict[int, int]:
        """Optimal one-to-one matching of tracks (at their predictions) to detections."""
        if not tracks or not len(candidates):
            return {}
        predicted = np.stack([self.tracks[t].predicted() for t in tracks])
        overlap = iou_matrix(predicted, boxes[candidates])
        rows, cols = linear_sum_assignment(-overlap)
        return {tracks[r]: int(candidates[c]) for r, c in zip(rows, cols, strict=True)
                if overlap[r, c] >= self.min_iou}

    def _end_lost(self) -> None:
        alive = []
        for track in self.tracks:
            if track.misses > self.coast_frames:
                self._end(track)
            else:
                alive.append(track)
        self.tracks = alive

    def _end(self, track: Track) -> None:
        if self.report_ended:
            self.ended.append(track)

    def end_all(self) -> None:
        """End every live track now (the run is stopping): each is counted and handed out
        by :meth:`take_ended` as if its object had left the picture."""
        for track in self.tracks:
            self._end(track)
        self.tracks = []

    def take_ended(self) -> list[Track]:
        """Tracks that ended since the last call; each is handed out once."""
        ended, self.ended = self.ended, []
        return ended

    def is_counted(self, track: Track) -> bool:
        """Whether a track was seen on enough frames to be a real object."""
        return track.hits >= self.min_hits
