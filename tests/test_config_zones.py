"""Zone configuration: parsing, validation messages, fuzzing, debounce, live reload."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coral_mfg.analytics.safety import ENTER, EXIT, GONE_GRACE_S, ZoneDebounce, ZoneStore
from coral_mfg.analytics.zones import KeepoutZone, place_zones
from coral_mfg.config.flags import resolve_settings, run_parser
from coral_mfg.config.settings import Settings, read_config_file
from coral_mfg.config.zones import ZoneMode, ZoneSource
from coral_mfg.core.errors import ConfigError
from coral_mfg.core.events import Stamper, event_json
from coral_mfg.runtime.zone_watch import (
    SETTLE_S,
    ZonePlacement,
    ZoneTarget,
    ZoneWatcher,
    zones_of,
)
from tests.conftest import ROOT, frames, jsonl, wait_for

SIZE = (960, 540)


def zones_from_settings(settings: Settings) -> tuple[KeepoutZone, ...]:
    """The start-up zones on a picture that fills the output frame."""
    return zones_of(settings, settings.camera_list()[0], (0, 0, *settings.out_size))[2]
SQUARE = [[100, 100], [300, 100], [300, 300], [100, 300]]


def _zones(tmp: Path, text: str) -> tuple[KeepoutZone, ...]:
    cfg = tmp / "site.toml"
    cfg.write_text(text)
    settings = resolve_settings(run_parser().parse_args(["--config", str(cfg)]))
    return zones_from_settings(settings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '[[safety.zones]]\nname = "press-1"\npoints = [[585,390],[720,335],[420,205],'
            '[305,235]]\n',
            [("press-1", ZoneMode.BOTTOM, 3, 3, True, (255, 0, 0), [585, 390])],
            id="defaults",
        ),
        pytest.param(
            '[[safety.zones]]\nname = "a"\npoints = [[0.1,0.1],[0.5,0.1],[0.5,0.5]]\n'
            'units = "relative"\nmode = "whole_box"\nenter_frames = 1\nexit_frames = 5\n'
            'enabled = false\ncolor = "#00ff80"\n',
            [("a", ZoneMode.WHOLE_BOX, 1, 5, False, (0, 255, 128), [96, 54])],
            id="relative-all-keys",
        ),
        pytest.param(
            'safety_check_whole_box = true\n[[safety.zones]]\nname = "a"\n'
            f"points = {SQUARE}\n[[safety.zones]]\nname = \"b\"\npoints = {SQUARE}\n"
            'mode = "bottom"\n',
            [("a", ZoneMode.WHOLE_BOX, 3, 3, True, (255, 0, 0), [100, 100]),
             ("b", ZoneMode.BOTTOM, 3, 3, True, (255, 0, 0), [100, 100])],
            id="two-zones-mode-default-from-flag",
        ),
        pytest.param(
            "width = 1920\nheight = 1080\n[[safety.zones]]\nname = \"hd\"\n"
            "points = [[0.5,0.5],[1,0.5],[1,1]]\nunits = \"relative\"\n",
            [("hd", ZoneMode.BOTTOM, 3, 3, True, (255, 0, 0), [960, 540])],
            id="relative-survives-resolution",
        ),
    ],
)
def test_good_configs(tmp_path: Path, text: str, expected: list[tuple[Any, ...]]) -> None:
    zones = _zones(tmp_path, text)
    got = [(z.name, z.mode, z.enter_frames, z.exit_frames, z.enabled, z.color,
            z.points[0].tolist()) for z in zones]
    assert got == expected
    assert all(z.source is not None and z.source.kind == "toml" for z in zones)


def test_config_without_zones_uses_the_csv(tmp_path: Path) -> None:
    zones = _zones(tmp_path, f'keepout_points_path = "{ROOT / "configs" / "keepout_points.csv"}"\n')
    assert [z.name for z in zones] == ["keepout_points"]
    assert (zones[0].enter_frames, zones[0].exit_frames) == (1, 1)
    assert zones[0].source is not None and zones[0].source.kind == "csv"


def test_explicit_csv_flag_wins_over_config_zones(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\n')
    settings = resolve_settings(run_parser().parse_args(
        ["--config", str(cfg), "--keepout_points_path",
         str(ROOT / "configs" / "keepout_points.csv")]))
    assert [z.name for z in zones_from_settings(settings)] == ["keepout_points"]


def test_shipped_default_config_has_the_original_zone() -> None:
    settings = resolve_settings(run_parser().parse_args([]))
    zone, walkway = zones_from_settings(settings)  # and the walkway the demo's worker enters
    assert (zone.name, walkway.name) == ("keepout", "walkway")
    assert zone.spec is not None and zone.spec.units == "relative"
    original = [[585, 390], [720, 335], [420, 205], [305, 235]]
    assert np.abs(zone.points - np.array(original)).max() < 0.5  # within half a pixel


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f'[[safety.zones]]\npoints = {SQUARE}\n',
         "zone 1: needs a name (a non-empty string)"),
        ('[[safety.zones]]\nname = "a"\npoints = [[1,2],[3,4]]\n',
         "zone 'a': needs at least 3 points, found 2"),
        ('[[safety.zones]]\nname = "a"\npoints = [[1,2],[3,"x"],[5,6]]\n',
         "zone 'a': point 2 must be two numbers [x, y], got [3, 'x']"),
        ('[[safety.zones]]\nname = "a"\npoints = [[1,2],[3,4,5],[5,6]]\n',
         "zone 'a': point 2 must be two numbers [x, y], got [3, 4, 5]"),
        ('[[safety.zones]]\nname = "a"\npoints = [[1,2],[3000,4],[5,600]]\n',
         "zone 'a': point (3000, 4) is outside the 960x540 frame the zone's pixels refer to; "
         'move the point, or set frame_size (or units = "relative")'),
        (f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\n'
         f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\n',
         "zone 'a': the name is used twice; zone names must be unique"),
        ('[[safety.zones]]\nname = "a"\npoints = [[0,0],[100,100],[100,0],[0,100]]\n',
         "zone 'a': the zone polygon crosses itself (Self-intersection[50 50]); "
         "reorder its points"),
        ('[[safety.zones]]\nname = "a"\npoints = [[0,0],[10,10],[20,20]]\n',
         "zone 'a': the zone polygon has no area (its points are on a line)"),
        (f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\nmode = "feet"\n',
         "zone 'a': mode must be 'bottom' or 'whole_box', got 'feet'"),
        (f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\nunits = "mm"\n',
         "zone 'a': units must be 'pixels' or 'relative', got 'mm'"),
        (f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\nunits = "relative"\n',
         "zone 'a': relative points must be between 0 and 1"),
        (f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\nenter_frames = 0\n',
         "zone 'a': enter_frames must be a whole number >= 1, got 0"),
        (f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\ncolor = "red"\n',
         "zone 'a': color must be '#rrggbb', got 'red'"),
        (f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\nshape = "x"\n',
         "zone 'a': unknown key 'shape'; known: color, enabled, enter_frames, exit_frames, "
         "frame_size, max_seconds, mode, name, points, units"),
        (f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\nenter_frame = 2\n',
         "zone 'a': unknown key 'enter_frame' (did you mean enter_frames?); known: color, "
         "enabled, enter_frames, exit_frames, frame_size, max_seconds, mode, name, points, "
         "units"),
        (f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\nwidth = 1280\n',
         "zone 'a': unknown key 'width'; 'width' is a top-level setting: TOML puts every key "
         "written after a [[safety.zones]] header into that zone (here zone 1), so move it "
         "above the first [[safety.zones]]"),
        (f'[[safety.zones]]\nname = "a"\npoints = {SQUARE}\nframe_size = [0, 2]\n',
         "zone 'a': frame_size must be [width, height] in whole pixels, got [0, 2]"),
        ('[safety]\nzones = 3\n', "safety.zones must be [[safety.zones]] tables"),
        ('[safety]\nareas = []\n', "unknown key 'safety.areas' (known: safety.zones)"),
        ('[safety]\nwidth = 3\n', "unknown key 'safety.width' (known: safety.zones); "
         "'width' is a top-level setting: write it above every [table]"),
        ('zones = []\n', "unknown key 'zones'; it belongs in [safety]"),
    ],
)
def test_bad_configs_name_file_zone_and_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _zones(tmp_path, text)
    assert str(err.value) == f"{tmp_path / 'site.toml'}: {message}"


def test_bad_zone_config_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text('[[safety.zones]]\nname = "a"\npoints = [[1,2],[3,4]]\n')
    result = subprocess.run([sys.executable, "-m", "coral_mfg", "--config", str(cfg),
                             "--headless"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"coral-mfg: error: {cfg}: zone 'a': needs at least 3 points, found 2")
    assert "Traceback" not in result.stderr


# --- fuzzing ----------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)
zone_tables = st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.text(max_size=6), values),
    "points": st.one_of(st.lists(st.lists(st.one_of(st.integers(-50, 2000),
                                                    st.floats(-1, 2000)), max_size=3),
                                 max_size=6), values),
    "units": st.sampled_from(["pixels", "relative", "x"]),
    "mode": st.sampled_from(["bottom", "whole_box", "y"]),
    "enter_frames": values, "exit_frames": values, "enabled": values, "color": values,
    "extra": values,
})
documents = st.fixed_dictionaries({}, optional={
    "width": values, "height": values, "device": values, "worker_threshold": values,
    "safety": st.one_of(values, st.fixed_dictionaries(
        {"zones": st.one_of(values, st.lists(zone_tables, max_size=4))})),
})


def _strip_none(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _strip_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_strip_none(x) for x in v if x is not None]
    return v


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents)
def test_fuzz_config_raises_only_config_errors(tmp_path_factory: pytest.TempPathFactory,
                                               doc: dict[str, Any]) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.toml"
    try:
        path.write_text(tomli_w.dumps(_strip_none(doc)))
    except (TypeError, ValueError):
        return  # not representable as TOML
    try:
        specs = read_config_file(path).get("zones")
        if specs:
            place_zones(specs, (0, 0, *SIZE), False, ZoneSource(path, "toml"))
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_fuzz_arbitrary_text(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "text.toml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(ConfigError):
        read_config_file(path)


# --- debounce ---------------------------------------------------------------------------

def _zone(enter: int, exit_: int) -> KeepoutZone:
    return KeepoutZone("press-1", np.array(SQUARE, np.float64), enter_frames=enter,
                       exit_frames=exit_)


@pytest.mark.parametrize(
    ("enter", "exit_", "script", "expected"),
    [
        # frame by frame: is track 7 inside? -> the (frame, event) pairs
        (3, 3, "IIIIOOOO", [(2, ENTER), (6, EXIT)]),
        (3, 3, "IIOIIOII", []),  # never 3 in a row: no alarm
        (3, 2, "IIIOIOOI", [(2, ENTER), (6, EXIT)]),  # one gap is not an exit
        (1, 1, "IOIO", [(0, ENTER), (1, EXIT), (2, ENTER),
                        (3, EXIT)]),
        (2, 3, "II--O", [(1, ENTER), (4, EXIT)]),  # '-': track not seen
    ],
)
def test_debounce_script(enter: int, exit_: int, script: str,
                         expected: list[tuple[int, str]]) -> None:
    zone = _zone(enter, exit_)
    debounce = ZoneDebounce()
    got = []
    for frame, c in enumerate(script):
        hits = {} if c == "-" else {"press-1": {7: c == "I"}}
        for kind, name, track in debounce.update(hits, (zone,)):
            assert (name, track) == ("press-1", 7)
            got.append((frame, kind))
    assert got == expected
    assert debounce.violations.get("press-1", 0) == sum(k == ENTER for _, k in expected)


def test_debounce_zone_removed_while_inside_exits_after_a_grace() -> None:
    """A zone gone from the file may be a file read half-written: who is in it stays in
    it for a few seconds; if the zone comes back there is no second entry."""
    zone = _zone(1, 3)
    enter, leave = (ENTER, "press-1", 1), (EXIT, "press-1", 1)
    debounce = ZoneDebounce()
    assert debounce.update({"press-1": {1: True}}, (zone,), now=0.0) == [enter]
    assert debounce.update({}, (), now=1.0) == []  # gone
    assert [(z, t) for z, t, _ in debounce.occupancy()] == [("press-1", 1)]
    assert debounce.update({"press-1": {1: True}}, (zone,), now=2.0) == []  # back
    assert debounce.violations == {"press-1": 1}
    assert debounce.update({}, (), now=3.0) == []  # gone again, and for good
    assert debounce.update({}, (), now=3.0 + GONE_GRACE_S - 0.01) == []
    assert debounce.update({}, (), now=3.0 + GONE_GRACE_S) == [leave]
    assert debounce.occupancy() == () and debounce.gone_since == {}
    assert debounce.update({"press-1": {1: True}}, (zone,), now=20.0) == [enter]  # a new stay
    assert debounce.violations == {"press-1": 2}


def test_debounce_disabled_zone_exits_at_once() -> None:
    zone = _zone(1, 3)
    debounce = ZoneDebounce()
    assert debounce.update({"press-1": {1: True}}, (zone,), now=0.0)
    off = KeepoutZone("press-1", zone.points, enter_frames=1, exit_frames=3, enabled=False)
    assert debounce.update({}, (off,), now=0.1) == [(EXIT, "press-1", 1)]


# --- live reload ------------------------------------------------------------------------

FAR = "x,y\n10,10\n60,10\n60,60\n10,60\n"  # the top-left corner: nobody walks there
ALL = "x,y\n0,0\n960,0\n960,540\n0,540\n"  # the whole frame



def _people(events: list[dict[str, Any]]) -> list[tuple[float, bool]]:
    return [(e["time"], o["keepout"]) for e in events if e["type"] == "frame"
            and e["stream"] == "worker_safety" for o in e["objects"]]


def test_live_reload_switches_zones_and_survives_a_bad_edit(tmp_path: Path) -> None:
    zone = tmp_path / "zone.csv"
    zone.write_text(FAR)
    events = tmp_path / "events.jsonl"
    app = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop",
         "--keepout_points_path", str(zone), "--events", str(events)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def wait(check: Any, timeout: float = 30) -> list[dict[str, Any]]:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if events.exists():
                    ev = jsonl(events)
                    if check(ev):
                        return ev
                time.sleep(0.1)
            raise AssertionError("timed out")

        before = wait(lambda ev: len(_people(ev)) >= 10)
        assert not any(k for _, k in _people(before))
        zone.write_text(ALL)  # when it is read: test_a_zone_file_is_read_only_once_it_...
        reloaded = wait(lambda ev: any(e["type"] == "zones_reloaded" for e in ev))
        reload_time = next(e["time"] for e in reloaded if e["type"] == "zones_reloaded")
        after = wait(lambda ev: len([t for t, _ in _people(ev) if t > reload_time + 0.1]) >= 5)
        later = [k for t, k in _people(after) if t > reload_time + 0.1]
        assert later and all(later)  # the whole frame is the zone now
        zone.write_text("x,y\n1,2\n")  # invalid: 1 point
        bad = wait(lambda ev: any(e["type"] == "zones_error" for e in ev))
        error = next(e for e in bad if e["type"] == "zones_error")
        assert "needs at least 3 points" in error["error"]
        final = wait(lambda ev: len(_people(ev)) > len(_people(bad)) + 10)
        assert all(k for t, k in _people(final) if t > error["time"] + 0.1)  # old zone in force
    finally:
        app.terminate()
        _, stderr = app.communicate(timeout=30)
    assert app.returncode == 0, stderr
    assert "the last good ones stay" in stderr


ZONE_A = ('[[safety.zones]]\nname = "A"\nunits = "relative"\n'
          "points = [[0.0, 0.0], [0.05, 0.0], [0.05, 0.05], [0.0, 0.05]]\n")
ZONE_B = ('[[safety.zones]]\nname = "B"\nunits = "relative"\n'
          "points = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\n")


def _watching(tmp: Path) -> tuple[Path, ZoneWatcher, list[dict[str, Any]]]:
    config = tmp / "site.toml"
    config.write_text(ZONE_A + ZONE_B)
    source = ZoneSource(config, "toml")
    placement = ZonePlacement((0, 0, *SIZE), whole_box=False)
    store = ZoneStore(place_zones(read_config_file(config)["zones"], placement.picture, False,
                                  source))
    seen: list[dict[str, Any]] = []
    watcher = ZoneWatcher((ZoneTarget("worker_safety", source, placement, store),),
                          threading.Event(), on_event=lambda e: seen.append(event_json(e)),
                          stamper=Stamper("t"))
    return config, watcher, seen


def _reloads(seen: list[dict[str, Any]]) -> list[list[str]]:
    return [e["zones"] for e in seen if e["type"] == "zones_reloaded"]


def test_a_zone_file_is_read_only_once_it_has_settled(tmp_path: Path) -> None:
    """The file is looked at (``poll``) at times this test chooses: no clock involved."""
    config, watcher, seen = _watching(tmp_path)
    # written in two steps, the pause shorter than the settle time: one reload, whole
    config.write_text(ZONE_A)
    watcher.poll(0.0)
    watcher.poll(SETTLE_S - 0.1)
    with config.open("a") as f:
        f.write(ZONE_B)
    watcher.poll(SETTLE_S - 0.05)
    watcher.poll(2 * SETTLE_S - 0.1)
    assert seen == []  # never read half-written
    watcher.poll(2 * SETTLE_S)
    assert _reloads(seen) == [["A", "B"]]
    # cut inside B's points, then the rest
    whole = ZONE_A + ZONE_B.replace("name = \"B\"", "name = \"B\"\ncolor = \"#00ff00\"")
    cut = whole.index("[1.0, 1.0]")
    config.write_text(whole[:cut])
    watcher.poll(10.0)
    watcher.poll(10.0 + SETTLE_S / 2)
    with config.open("a") as f:
        f.write(whole[cut:])
    watcher.poll(10.0 + SETTLE_S * 0.75)
    watcher.poll(10.0 + SETTLE_S * 1.8)
    assert len(_reloads(seen)) == 2 and not [e for e in seen if e["type"] == "zones_error"]
    assert watcher.targets[0].store.zones[1].color == (0, 255, 0)
    # a new file renamed over the old one is whole: read at the first look
    new = tmp_path / "site.toml.new"
    new.write_text(ZONE_B)
    os.replace(new, config)
    watcher.poll(20.0)
    assert _reloads(seen)[-1] == ["B"]
    # a pause longer than the settle time: the half is read (the debounce keeps who is in
    # a zone that vanishes for a moment, see the test above)
    config.write_text(ZONE_A)
    watcher.poll(30.0)
    watcher.poll(30.0 + SETTLE_S)
    assert _reloads(seen)[-1] == ["A"]


def _still_video(path: Path, frame: Any, count: int = 30) -> Path:
    """A person standing still: one real frame of the worker video, repeated."""
    h, w = frame.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 15.0, (w, h))
    for _ in range(count):
        writer.write(frame)
    writer.release()
    return path


def test_a_half_written_zone_file_gives_no_false_exit_or_entry(tmp_path: Path) -> None:
    """A worker stands still in zone B while the file is written in two steps with a pause
    (B missing for a while), cut inside B's points, and renamed over: B's one entry stays
    one entry, with no exit, and the summary counts what the events say."""
    still = _still_video(tmp_path / "still.mp4", frames("worker-zone-detection.mp4")[35])
    config = tmp_path / "site.toml"
    config.write_text(ZONE_A + ZONE_B)
    events = tmp_path / "events.jsonl"
    app = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop",
         "--config", str(config), "--worker_safety_input", str(still),
         "--events", str(events)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def logged() -> list[dict[str, Any]]:
        return jsonl(events) if events.exists() else []

    def reloads() -> int:
        return sum(e["type"] == "zones_reloaded" for e in logged())

    try:
        wait_for(lambda: any(e["type"] == "keepout_enter" for e in logged()), "B entered")
        with config.open("w") as f:  # A only, then a pause, then B
            f.write(ZONE_A)
        wait_for(lambda: reloads() == 1, "the half file read")
        time.sleep(1.0)  # B is missing for a while, as it was when an editor paused
        with config.open("a") as f:
            f.write(ZONE_B)
        wait_for(lambda: reloads() == 2, "the whole file read")
        whole = ZONE_A + ZONE_B
        cut = whole.index("[1.0, 1.0]")
        with config.open("w") as f:  # cut inside B's points, then the rest
            f.write(whole[:cut])
        wait_for(lambda: any(e["type"] == "zones_error" for e in logged()), "the cut refused")
        with config.open("a") as f:
            f.write(whole[cut:])
        wait_for(lambda: reloads() == 3, "the rest read")
        renamed = tmp_path / "site.toml.part"
        renamed.write_text(whole)
        os.replace(renamed, config)
        wait_for(lambda: reloads() == 4, "the renamed file read")
        count = len(logged())
        wait_for(lambda: len(logged()) > count + 60, "frames after the last reload")
    finally:
        app.terminate()
        _, stderr = app.communicate(timeout=60)
    assert app.returncode == 0, stderr
    history = logged()
    kinds = [(e["type"], e.get("zone")) for e in history if e["type"].startswith("keepout")]
    assert kinds == [("keepout_enter", "B")], kinds
    summary = history[-1]
    assert summary["keepout_violations"] == 1 and summary["violations_by_zone"] == {"B": 1}
    reloaded = [e["zones"] for e in history if e["type"] == "zones_reloaded"]
    assert reloaded == [["A"], ["A", "B"], ["A", "B"], ["A", "B"]]
    people = [o for e in history if e["type"] == "frame" and e["stream"] == "worker_safety"
              for o in e["objects"]]
    assert people and all(o["zones"] == ["B"] for o in people[5:])  # never left B


def test_whole_box_flag_sets_the_mode_of_the_shipped_zone() -> None:
    settings = resolve_settings(run_parser().parse_args(["--safety_check_whole_box"]))
    assert zones_from_settings(settings)[0].mode is ZoneMode.WHOLE_BOX


# --- one schema, sizes, renames --------------------------------------------------------------


def test_the_documented_zone_table_is_the_schema() -> None:
    from coral_mfg.config.zones import schema_table

    assert schema_table() in (ROOT / "docs" / "zones.md").read_text()


@pytest.mark.parametrize(
    ("size", "corner"),
    [((960, 540), [585, 390]), ((1280, 720), [780, 520]), ((480, 270), [292.5, 195])],
)
def test_pixel_zones_are_scaled_to_the_output(
    tmp_path: Path, size: tuple[int, int], corner: list[float]
) -> None:
    zones = _zones(tmp_path, f"width = {size[0]}\nheight = {size[1]}\n[[safety.zones]]\n"
                   'name = "press-1"\npoints = [[585,390],[720,335],[420,205],[305,235]]\n')
    assert zones[0].points[0].tolist() == corner


def test_a_renamed_zone_keeps_the_people_in_it() -> None:
    square = np.array(SQUARE, np.float64)
    store = ZoneStore((KeepoutZone("press-1", square, enter_frames=1, exit_frames=1),))
    debounce = ZoneDebounce()
    assert debounce.update({"press-1": {7: True}}, store.zones) == [
        (ENTER, "press-1", 7)]
    store.replace((KeepoutZone("press-A", square, enter_frames=1, exit_frames=1),))
    for old, new in store.take_renames():
        debounce.rename(old, new)
    assert debounce.update({"press-A": {7: True}}, store.zones) == []  # no exit, no entry
    assert debounce.violations == {"press-A": 1}
    assert debounce.active(7) == ["press-A"]
    # moved and renamed at once: still the zone at the same place in the list
    store.replace((KeepoutZone("press-B", square + 5, enter_frames=1, exit_frames=1),))
    assert store.take_renames() == [("press-A", "press-B")]
