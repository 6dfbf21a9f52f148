from __future__ import annotations

import numpy as np
import pytest

from coral_mfg.analytics.inspection import Votes
from coral_mfg.analytics.tracking import Tracker
from coral_mfg.core.detections import Detections, duplicates, iou_matrix


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


def _box(x: float, y: float = 100, w: float = 60, h: float = 120) -> list[float]:
    return [x, y, x + w, y + h]


# Scripts: per frame, the detections as (box, score); ids are checked against "expected",
# one list per frame of the track ids reported (in id order), predicted ones marked "~".
Script = tuple[list[list[tuple[list[float], float]]], list[list[str]]]
SCRIPTS: dict[str, Script] = {
    "steady-walk": (
        [[(_box(10 + 8 * i), 0.8)] for i in range(6)],
        [["1"]] * 6,
    ),
    "one-missed-frame": (
        [[(_box(10), 0.8)], [(_box(18), 0.8)], [], [(_box(34), 0.8)], [(_box(42), 0.8)]],
        [["1"], ["1"], ["1~"], ["1"], ["1"]],
    ),
    "occlusion-then-back": (  # three frames behind a pillar; comes back where it was heading
        [[(_box(10 + 10 * i), 0.8)] for i in range(3)] + [[], [], []]
        + [[(_box(70 + 10 * i), 0.8)] for i in range(2)],
        [["1"]] * 3 + [["1~"]] * 3 + [["1"]] * 2,
    ),
    "low-score-continues": (  # a weak frame keeps the track, it does not end it
        [[(_box(10), 0.8)], [(_box(16), 0.8)], [(_box(22), 0.2)], [(_box(28), 0.8)]],
        [["1"], ["1"], ["1"], ["1"]],
    ),
    "low-score-never-starts": (
        [[(_box(10), 0.2)], [(_box(16), 0.2)], [(_box(22), 0.2)]],
        [[], [], []],
    ),
    "two-crossing": (  # walking towards each other and past: the ids stay with their walker
        [[(_box(0 + 20 * i, 100), 0.8), (_box(200 - 20 * i, 110), 0.8)] for i in range(10)],
        [["1", "2"]] * 10,
    ),
    "track-ends": (  # unseen for longer than the coast: gone, and a new object is new
        [[(_box(10), 0.8)], [(_box(14), 0.8)]] + [[]] * 3 + [[(_box(300), 0.8)]],
        [["1"], ["1"], ["1~"], ["1~"], [], ["2"]],
    ),
    "seen-once-does-not-coast": (
        [[(_box(10), 0.8)], [], []],
        [["1"], [], []],
    ),
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_tracker_scripts(name: str) -> None:
    frames, expected = SCRIPTS[name]
    tracker = Tracker(high=0.5, low=0.15, coast_frames=3 if name != "track-ends" else 2)
    crossing: list[list[float]] = []
    for dets, want in zip(frames, expected, strict=True):
        boxes = np.array([b for b, _ in dets], np.float64).reshape(-1, 4)
        scores = np.array([s for _, s in dets], np.float64)
        seen = tracker.update(boxes, scores)
        got = [f"{o.track.id}{'~' if o.predicted else ''}" for o in seen]
        assert got == want
        if name == "two-crossing":
            crossing.append([float(o.box[0]) for o in seen])
    if name == "two-crossing":  # track 1 moved right all along, track 2 left
        assert crossing[-1][0] > crossing[0][0] and crossing[-1][1] < crossing[0][1]


def test_a_coasting_track_follows_its_motion() -> None:
    tracker = Tracker(high=0.5)
    for i in range(4):
        tracker.update(np.array([_box(10 + 10 * i)]), np.array([0.9]))
    (coasting,) = tracker.update(np.zeros((0, 4)), np.zeros(0))
    assert coasting.predicted
    assert 45 < coasting.box[0] < 55  # about 50: one more step of 10 px


@pytest.mark.parametrize(
    ("boxes", "scores", "kept"),
    [
        ([[0, 0, 100, 200], [5, 5, 105, 205]], [0.8, 0.5], [True, False]),  # overlapping
        ([[0, 0, 100, 200], [20, 20, 60, 120]], [0.74, 0.31], [True, False]),  # one inside
        ([[20, 20, 60, 120], [0, 0, 100, 200]], [0.31, 0.74], [False, True]),  # kept: best
        ([[0, 0, 100, 200], [300, 0, 400, 200]], [0.8, 0.5], [True, True]),  # two people
        ([[0, 0, 100, 200], [60, 0, 160, 200]], [0.8, 0.7], [True, True]),  # side by side
    ],
    ids=["overlap", "nested", "nested-best-second", "apart", "neighbours"],
)
def test_duplicates_are_one_object(boxes: list[list[float]], scores: list[float],
                                   kept: list[bool]) -> None:
    got = duplicates(np.array(boxes, np.float64), np.array(scores), iou=0.5, inside=0.8)
    assert got.tolist() == kept


@pytest.mark.parametrize(
    ("classes", "by_class", "scores_kept"),
    [
        ([1, 1, 1], True, [0.9, 0.7]),  # one class: the weaker overlapping box goes
        ([1, 2, 1], True, [0.9, 0.5, 0.7]),  # an apple and an orange: two classes, both kept
        ([1, 2, 1], False, [0.9, 0.7]),  # any class: one object the detector could not name
        ([1], True, [0.9]),
        ([], True, []),
    ],
    ids=["one-class", "two-classes", "any-class", "one-box", "none"],
)
def test_deduplicated_keeps_the_best_box_of_each_object(
        classes: list[int], by_class: bool, scores_kept: list[float]) -> None:
    boxes = np.array([[10, 10, 50, 50], [12, 11, 52, 49], [100, 100, 150, 150]],
                     np.float32)[:len(classes)]
    scores = np.array([0.9, 0.5, 0.7], np.float32)[:len(classes)]
    found = Detections(boxes.reshape(-1, 4), scores, np.array(classes, np.int32), (724, 400))
    got = found.deduplicated(iou=0.5, inside=0.8, by_class=by_class)
    assert got.scores.tolist() == pytest.approx(scores_kept)
    assert got.frame_size == (724, 400) and len(got.xyxy) == len(got.class_ids) == len(got)


def test_tracks_keep_ids_and_bound_their_state() -> None:
    tracker = Tracker(high=0.5, coast_frames=2, report_ended=True)
    ids = []
    for step in range(5):
        boxes = np.array([[10 + step * 5, 10, 60 + step * 5, 60], [200, 200, 250, 250]])
        seen = tracker.update(boxes, np.array([0.9, 0.9]))
        ids.append([o.track.id for o in seen])
    assert ids == [[1, 2]] * 5
    expected = tracker.predictions()
    assert expected.shape == (2, 4) and expected[0, 0] > 30  # moving right: ahead of it
    tracker.update(np.array([[1000.0, 1000, 1050, 1050]]), np.array([0.1]))
    assert expected.shape == (2, 4)  # an earlier answer is never changed under its reader
    for _ in range(3):
        tracker.update(np.zeros((0, 4)), np.zeros(0))
    assert not tracker.tracks  # state stays bounded: ended tracks are dropped
    assert [t.id for t in tracker.take_ended()] == [1, 2]
    assert tracker.predictions().shape == (0, 4)


def test_votes_make_one_verdict() -> None:
    votes = Votes()
    for step in range(5):
        votes.add(np.array([0.9, 0.1]) if step != 2 else np.array([0.2, 0.8]))
    assert votes.verdict == 0  # one bad frame out of five does not flip the verdict
    assert votes.score == pytest.approx((0.9 * 4 + 0.2) / 5)
    assert Votes().verdict is None and Votes().score == 0.0


@pytest.mark.parametrize("report", [False, True], ids=["not-asked", "reported"])
def test_ended_tracks_are_kept_only_when_asked_for_and_handed_out_once(report: bool) -> None:
    """A caller that never takes ended tracks (worker safety) must not collect them all
    shift; one that asks (inspection) gets each once."""
    tracker = Tracker(high=0.5, coast_frames=1, report_ended=report)
    for round_ in range(50):
        for step in range(3):
            x = 10 + step * 5
            tracker.update(np.array([[x, 10, x + 50, 60]]), np.array([0.9]))
        for _ in range(3):
            tracker.update(np.zeros((0, 4)), np.zeros(0))
        if report and round_ == 0:
            first = tracker.take_ended()
            assert [t.id for t in first] == [1] and tracker.take_ended() == []
    assert len(tracker.ended) == (49 if report else 0)
