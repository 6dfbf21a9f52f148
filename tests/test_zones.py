"""Keep-out geometry, including the cases the original demo's corner test gets wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coral_mfg.analytics.zones import KeepoutZone, place_zone
from coral_mfg.config.zones import ZoneMode, csv_spec, read_points_csv
from coral_mfg.core.errors import ConfigError

SQUARE = np.array([[100, 100], [200, 100], [200, 200], [100, 200]], dtype=np.float64)
NARROW = np.array([[140, 150], [160, 150], [160, 300], [140, 300]], dtype=np.float64)


@pytest.mark.parametrize(
    ("zone", "mode", "box", "inside"),
    [
        # a narrow zone between the feet: both bottom corners outside, the edge crosses it
        (NARROW, ZoneMode.BOTTOM, [100, 50, 200, 200], True),
        # feet below the zone, body across it: bottom mode says no, whole-box says yes
        (SQUARE, ZoneMode.BOTTOM, [120, 50, 180, 250], False),
        (SQUARE, ZoneMode.WHOLE_BOX, [120, 50, 180, 250], True),
        # one box corner inside the zone
        (SQUARE, ZoneMode.WHOLE_BOX, [190, 190, 260, 260], True),
        (SQUARE, ZoneMode.BOTTOM, [150, 20, 260, 150], True),
        # the bottom edge lies exactly on the zone's top edge: touching counts
        (SQUARE, ZoneMode.BOTTOM, [120, 40, 180, 100], True),
        # the box's right edge touches the zone's left edge
        (SQUARE, ZoneMode.WHOLE_BOX, [40, 120, 100, 180], True),
        # the zone inside the box: no box corner in the zone, no zone corner on the feet
        (SQUARE, ZoneMode.WHOLE_BOX, [50, 50, 250, 250], True),
        (SQUARE, ZoneMode.BOTTOM, [50, 50, 250, 250], False),
        # clear misses
        (SQUARE, ZoneMode.BOTTOM, [300, 300, 350, 400], False),
        (SQUARE, ZoneMode.WHOLE_BOX, [0, 0, 99, 99], False),
        # feet fully inside
        (SQUARE, ZoneMode.BOTTOM, [120, 0, 180, 150], True),
    ],
    ids=[
        "zone-between-feet", "body-over-zone-bottom", "body-over-zone-whole",
        "corner-inside-whole", "corner-inside-bottom", "edge-touching-bottom",
        "edge-touching-whole", "zone-inside-box-whole", "zone-inside-box-bottom",
        "miss-bottom", "miss-whole", "feet-inside",
    ],
)
def test_keepout_geometry(
    zone: np.ndarray, mode: ZoneMode, box: list[int], inside: bool
) -> None:
    z = KeepoutZone("z", zone, mode)
    assert z.contains_boxes(np.array([box], dtype=np.float32)).tolist() == [inside]


def test_vectorized_over_many_boxes() -> None:
    z = KeepoutZone("z", SQUARE, ZoneMode.BOTTOM)
    boxes = np.array([[120, 0, 180, 150], [300, 300, 350, 400], [100, 50, 200, 200]], np.float32)
    assert z.contains_boxes(boxes).tolist() == [True, False, True]
    assert z.contains_boxes(np.zeros((0, 4), np.float32)).shape == (0,)


def load_csv_zone(path: Path, picture: tuple[int, int, int, int]) -> KeepoutZone:
    return place_zone(csv_spec(path), picture, False, None, str(path))


@pytest.mark.parametrize(
    ("picture", "expected"),
    [
        ((0, 0, 960, 540), [[585, 390], [720, 335], [420, 205], [305, 235]]),
        # twice the size: the zone is scaled with the picture
        ((0, 0, 1920, 1080), [[1170, 780], [1440, 670], [840, 410], [610, 470]]),
        # a 960x540 picture letterboxed into a 960x960 frame: shifted down, not stretched
        ((0, 210, 960, 540), [[585, 600], [720, 545], [420, 415], [305, 445]]),
    ],
    ids=["own-size", "scaled", "letterboxed"],
)
def test_original_default_polygon(
    picture: tuple[int, int, int, int], expected: list[list[int]]
) -> None:
    zone = load_csv_zone(Path(__file__).parents[1] / "configs" / "keepout_points.csv", picture)
    assert zone.points.tolist() == expected
    assert zone.mode is ZoneMode.BOTTOM
    assert (zone.enter_frames, zone.exit_frames) == (1, 1)  # the original had no debounce


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1,2\n3,4\n5,6\n", "the first line must be the header 'x,y'"),
        ("x,y\n1,2\n3,4\n", "needs at least 3 points, found 2"),
        ("x,y\n1,2\n3,four\n5,6\n", "line 3: expected two numbers 'x,y', got '3,four'"),
        ("x,y\n1,2,3\n3,4\n5,6\n", "line 2: expected two numbers"),
        ("", "the first line must be the header"),
    ],
)
def test_bad_csv(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "zone.csv"
    f.write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_points_csv(f)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("x,y\n0,0\n100,100\n100,0\n0,100\n", "crosses itself .Self-intersection"),
        ("x,y\n0,0\n1000,0\n0,100\n", r"point \(1000, 0\) is outside the 960x540 frame"),
        ("x,y\n0,0\n10,10\n20,20\n", "has no area .its points are on a line"),
    ],
)
def test_bad_polygons(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "zone.csv"
    f.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_csv_zone(f, (0, 0, 960, 540))


def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"keep-out points file .* not found"):
        read_points_csv(tmp_path / "nope.csv")
