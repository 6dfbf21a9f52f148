"""A small IoU tracker: the same object keeps one id across frames.

Objects on a conveyor or a shop floor move a fraction of their size between
frames, so greedy matching on box overlap is enough and needs no extra
dependency. Each track carries a vote over per-frame grades, which gives an
apple one verdict instead of a grade that flickers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


def iou_matrix(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4), as x1, y1, x2, y2."""
    a = np.asarray(a, dtype=np.float64)[:, None, :]
    b = np.asarray(b, dtype=np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass
class Track:
    """One object followed across frames, with its summed grade scores."""

    id: int
    box: npt.NDArray[np.float32]
    hits: int = 1
    misses: int = 0
    votes: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    n_votes: int = 0

    def vote(self, scores: npt.NDArray[np.floating]) -> None:
        if self.votes.shape != scores.shape:
            self.votes = np.zeros(scores.shape, dtype=np.float64)
        self.votes += scores
        self.n_votes += 1

    @property
    def verdict(self) -> int | None:
        """The class with the most summed score over the track's frames."""
        if self.votes.size == 0 or not self.votes.any():
            return None
        return int(np.argmax(self.votes))

    @property
    def verdict_score(self) -> float:
        """Mean score of the winning class over the track's graded frames."""
        return float(self.votes.max() / self.n_votes) if self.n_votes else 0.0


@dataclass
class IouTracker:
    """Greedy IoU matching; a track ends after ``max_misses`` frames unseen."""

    min_iou: float = 0.3
    max_misses: int = 5
    min_hits: int = 3  # frames before a track counts as a real object
    tracks: list[Track] = field(default_factory=list)
    #: ended tracks seen on enough frames, counted by verdict (None: never graded). Only
    #: counts are kept, so memory stays flat however long the run.
    ended_verdicts: dict[int | None, int] = field(default_factory=dict)
    _next_id: int = 1

    def update(self, boxes: npt.NDArray[np.float32]) -> list[Track]:
        """Match this frame's boxes; returns the track of each box, in box order."""
        assigned: list[Track | None] = [None] * len(boxes)
        matched: set[int] = set()
        if self.tracks and len(boxes):
            ious = iou_matrix(boxes, np.stack([t.box for t in self.tracks]))
            for flat in np.argsort(-ious, axis=None):
                i, j = np.unravel_index(flat, ious.shape)
                if ious[i, j] < self.min_iou:
                    break
                if assigned[i] is not None or j in matched:
                    continue
                track = self.tracks[j]
                track.box = boxes[i].copy()
                track.hits += 1
                track.misses = 0
                assigned[i] = track
                matched.add(int(j))
        for j, track in enumerate(self.tracks):
            if j not in matched:
                track.misses += 1
        alive = []
        for track in self.tracks:
            if track.misses > self.max_misses:
                if track.hits >= self.min_hits:
                    key = track.verdict
                    self.ended_verdicts[key] = self.ended_verdicts.get(key, 0) + 1
            else:
                alive.append(track)
        self.tracks = alive
        result: list[Track] = []
        for i, existing in enumerate(assigned):
            if existing is None:
                existing = Track(self._next_id, boxes[i].copy())  # noqa: PLW2901
                self._next_id += 1
                self.tracks.append(existing)
            result.append(existing)
        return result

    def verdict_counts(self) -> dict[int | None, int]:
        """Objects seen on at least ``min_hits`` frames, ended or live, by verdict."""
        counts = dict(self.ended_verdicts)
        for track in list(self.tracks):
            if track.hits >= self.min_hits:
                counts[track.verdict] = counts.get(track.verdict, 0) + 1
        return counts
