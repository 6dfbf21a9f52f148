from __future__ import annotations

import numpy as np
import pytest

from coral_mfg.tracking import IouTracker, iou_matrix


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 1 / 3),
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),
    ],
    ids=["same", "half-shift", "apart", "touching", "degenerate"],
)
def test_iou(a: list[float], b: list[float], expected: float) -> None:
    got = iou_matrix(np.array([a], np.float32), np.array([b], np.float32))
    assert got.shape == (1, 1)
    assert got[0, 0] == pytest.approx(expected)


def test_tracks_keep_ids_and_vote() -> None:
    tracker = IouTracker(max_misses=2)
    ids = []
    for step in range(5):
        boxes = np.array([[10 + step * 5, 10, 60 + step * 5, 60], [200, 200, 250, 250]], np.float32)
        tracks = tracker.update(boxes)
        ids.append([t.id for t in tracks])
        tracks[0].vote(np.array([0.9, 0.1]) if step != 2 else np.array([0.2, 0.8]))
    assert ids == [[1, 2]] * 5
    first = tracker.tracks[0]
    assert first.verdict == 0  # one bad frame out of five does not flip the verdict
    assert first.verdict_score == pytest.approx((0.9 * 4 + 0.2) / 5)
    for _ in range(3):
        tracker.update(np.zeros((0, 4), np.float32))
    assert not tracker.tracks
    # only counts of ended tracks are kept: one graded 0, one never graded
    assert tracker.ended_verdicts == {0: 1, None: 1}
    assert tracker.verdict_counts() == {0: 1, None: 1}


def test_new_object_gets_new_id() -> None:
    tracker = IouTracker()
    a = tracker.update(np.array([[0, 0, 10, 10]], np.float32))
    b = tracker.update(np.array([[100, 100, 110, 110]], np.float32))
    assert a[0].id != b[0].id
