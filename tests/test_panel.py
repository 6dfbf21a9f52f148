"""The strip under each camera's picture, as built from the run's status."""

from __future__ import annotations

from dataclasses import replace

import pytest

from coral_mfg.core.status import (
    ENDED,
    LIVE,
    NO_SIGNAL,
    PAUSED,
    AcceleratorStatus,
    Occupant,
    PresenceStatus,
    RunStatus,
    StreamStatus,
    ZoneStatus,
)
from coral_mfg.core.tally import EventKey, PeriodTotals
from coral_mfg.outputs.panel import ALARM_RED, AMBER, OK, Segment, build_panel

WALL = 1_790_000_000.0


def _stream(**kw: object) -> StreamStatus:
    base = StreamStatus(name="press", source="press.mp4", state=LIVE, reason=None, fps=24.5,
                        fps_run=24.0, inference_ms=40.0, frames=100, dropped=0, errors=0,
                        source_lost=0, roles=("safety",), zones=(ZoneStatus("walkway", True,
                                                                            "feet"),),
                        clock=100.0)
    return replace(base, **kw)  # type: ignore[arg-type]


def _status(stream: StreamStatus, **kw: object) -> RunStatus:
    acc = AcceleratorStatus(device="cpu", detector="ssdlite_mobiledet", down=None,
                            fallback=False, lost=0, restored=0, fallbacks=0, failed_frames=0)
    return replace(RunStatus(at=WALL, uptime=5.0, station="line 3", streams=(stream,),
                             accelerator=acc), **kw)  # type: ignore[arg-type]


def _text(panel_lines: tuple[tuple[Segment, ...], ...]) -> list[str]:
    return ["".join(s.text for s in line) for line in panel_lines]


def test_a_live_camera_says_so_in_green() -> None:
    panel = build_panel(_status(_stream()), "press", WALL)
    assert panel.health == "live" and panel.dot == OK and not panel.alarm
    text = _text(panel.lines)
    assert text[0].startswith("PRESS  LIVE: 24.5 fps")
    assert "entries 0" in text[1]


def test_someone_in_a_zone_turns_the_strip_red_and_names_the_zone() -> None:
    s = _stream(occupants=(Occupant("walkway", 7, 92.0),), entries=(("walkway", 1),))
    panel = build_panel(_status(s), "press", WALL)
    assert panel.alarm
    assert _text(panel.lines)[1] == "KEEP-OUT walkway #7 8 s"


def test_a_blind_camera_is_red_and_raises_no_check_alarm() -> None:
    s = _stream(state=NO_SIGNAL, reason="NO SIGNAL: the stream ended",
                occupants=(Occupant("walkway", 7, 92.0),),
                presence=(PresenceStatus("fixture", "bottle", 2, 0, True),))
    panel = build_panel(_status(s), "press", WALL)
    assert panel.health == "blind" and panel.dot == ALARM_RED and not panel.alarm
    text = _text(panel.lines)
    assert "BLIND: NO SIGNAL" in text[0] and "fixture ?" in text[1]


def test_a_fallback_is_degraded_in_amber() -> None:
    acc = AcceleratorStatus(device="cpu", detector="d", down=None, fallback=True, lost=1,
                            restored=0, fallbacks=1, failed_frames=0)
    panel = build_panel(_status(_stream(), accelerator=acc), "press", WALL)
    assert panel.health == "degraded" and panel.dot == AMBER
    assert "the Edge TPU failed" in _text(panel.lines)[0]


def test_grades_are_said_in_words_pass_or_fail() -> None:
    s = _stream(roles=("inspection",), zones=(), inspected=(("fresh_apple", 3),
                                                             ("rotten_apple", 1)),
                passing=("fresh_apple",))
    text = _text(build_panel(_status(s), "press", WALL).lines)
    assert "Fresh apple 3 PASS  |  Rotten apple 1 FAIL" in text[1]


@pytest.mark.parametrize("details", [True, False])
def test_the_last_line_is_the_shift_or_on_request_the_inference_details(details: bool) -> None:
    """The window's ``h`` swaps them: with a history there is always a shift line, and the
    inference details (skipped frames among them) must still be reachable."""
    shift = PeriodTotals(name="2026-11-29 06:00", start=WALL - 3600, end=WALL + 3600, runs=2,
                         counts=((EventKey("keepout_enter", "press", zone="walkway"), 4),))
    text = _text(build_panel(_status(_stream(skipped=12), shift=shift), "press", WALL,
                             details=details).lines)
    assert text[2] == ("inference 40 ms on CPU   dropped 0   skipped 12" if details
                       else "shift 06:00: entries 4")
    # grades are said in words, as on the line above
    graded = replace(shift, counts=((EventKey("graded", "press", grade="rotten_apple"), 2),))
    assert _text(build_panel(_status(_stream(), shift=graded), "press", WALL).lines)[2] == \
        "shift 06:00: Rotten apple 2"
    # without a history, the details have the line
    assert _text(build_panel(_status(_stream()), "press", WALL).lines)[2].startswith(
        "inference 40 ms")


@pytest.mark.parametrize("state", [PAUSED, ENDED])
def test_a_paused_or_ended_camera_says_so_and_its_checks_are_unknown(state: str) -> None:
    """Its zones read unknown to plant systems; the picture held is the last one seen, and
    the strip keeps that picture's alarm."""
    s = _stream(state=state, reason=f"{state.upper()} by the operator: nothing is inspected",
                occupants=(Occupant("walkway", 7, 92.0),),
                presence=(PresenceStatus("fixture", "bottle", 2, 0, True),))
    panel = build_panel(_status(s, paused=state == PAUSED), "press", WALL)
    assert panel.health == state and panel.alarm
    text = _text(panel.lines)
    assert f"{state.upper()}: by the operator" in text[0]  # its state said once
    assert text[1] == "KEEP-OUT walkway #7 8 s" and "fixture ?" in text[2]
    assert s.blind is not None and s.occupancy("walkway") is None


def test_a_long_reason_is_cut_before_the_clock() -> None:
    s = _stream(state=NO_SIGNAL, reason="NO SIGNAL: cannot open stream http://127.0.0.1:18601"
                "/cam: check the URL and that the camera is on the network " * 2)
    first = _text(build_panel(_status(s), "press", WALL).lines)[0]
    body, clock = first.rsplit("  ", 1)
    assert clock.startswith("20") and len(body) <= len("PRESS  ") + 78


def test_an_entry_on_the_frame_drawn_is_counted_before_the_status_knows_it() -> None:
    from coral_mfg.core.results import PersonObject

    person = PersonObject(score=0.7, box=(10, 10, 50, 90), keepout=True, track=3,
                          zones=("walkway",))
    panel = build_panel(_status(_stream()), "press", WALL, people=[person])
    text = _text(panel.lines)
    assert panel.alarm and text[1] == "KEEP-OUT walkway #3"
    assert text[2].startswith("entries 1")
    # once the status has it, it is not counted twice
    known = _stream(occupants=(Occupant("walkway", 3, 99.0),), entries=(("walkway", 1),))
    assert _text(build_panel(_status(known), "press", WALL, people=[person]).lines)[2] \
        .startswith("entries 1")
