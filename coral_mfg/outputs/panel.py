"""The strip under each camera's picture: who it is, whether it sees, what it counts, and
the alarm no one can miss. Described once, drawn by the window (GL) and by everything
made away from it (recordings, snapshots, the web view) alike.

The strip lies below the picture, never over it, so it never hides a detection.
An alarm (someone in a keep-out zone, a dwell or presence alarm) turns the strip
red, names what and for how long, and puts a red border round the picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coral_mfg.core.clock import local_caption
from coral_mfg.core.names import display_name
from coral_mfg.core.results import PersonObject
from coral_mfg.core.status import ENDED, PAUSED, RunStatus, StreamStatus

Color = tuple[int, int, int]  # RGB

#: Height of the strip, in pane pixels: three lines of text.
STRIP_HEIGHT = 72
LINE_HEIGHT = 20.0
TEXT: Color = (240, 240, 240)
DIM: Color = (160, 160, 160)
OK: Color = (60, 210, 90)
AMBER: Color = (250, 180, 40)
ALARM_RED: Color = (220, 30, 30)
STRIP_BG: Color = (24, 24, 24)
PASS_GREEN: Color = (90, 220, 110)
FAIL_RED: Color = (255, 110, 100)
BORDER_PX = 6


@dataclass(frozen=True)
class Segment:
    text: str
    color: Color = TEXT


@dataclass(frozen=True)
class Panel:
    """A camera's strip: up to three lines of coloured text, the health dot's colour, and
    whether the camera is in alarm (a red strip and a red border round the picture)."""

    lines: tuple[tuple[Segment, ...], ...]
    dot: Color
    alarm: bool
    health: str  # "live", "degraded", "blind"


def health_of(status: RunStatus, s: StreamStatus) -> tuple[str, Color, str]:
    """live / degraded / paused / blind, its colour, and the reason in words."""
    if s.state in (PAUSED, ENDED):  # "PAUSED by the operator: ..." says its state once
        reason = s.reason or s.state
        head = s.state.upper()
        if reason.startswith(head):
            reason = reason[len(head):].lstrip(" :")
        return s.state, AMBER, reason
    if s.blind:
        return "blind", ALARM_RED, s.blind
    reasons = []
    if status.accelerator.fallback:
        reasons.append("on the CPU: the Edge TPU failed")
    if status.output_warning:
        reasons.append(status.output_warning)
    if status.model_warning and "inspection" in s.roles:
        reasons.append(f"classifier unfit: {status.model_warning}")
    if status.zone_error and s.zones:
        reasons.append(f"zone file refused: {status.zone_error}")
    if reasons:
        return "degraded", AMBER, "; ".join(reasons)
    return "live", OK, f"{s.fps:.1f} fps"


def alarms_of(s: StreamStatus, people: Sequence[PersonObject] | None) -> list[str]:
    """What is wrong on the floor now, in words, most urgent first. ``people``, the
    frame's own, say who is in a zone on the very frame drawn (the status may be a
    moment older: the entry's own picture must show its alarm)."""
    if s.blind and s.state not in (PAUSED, ENDED):
        return []  # said by the health line: the checks are unknown, not alarming
    # paused or ended, the picture held is the last seen: its alarms are still its own
    out = []
    now = s.clock
    for o in s.dwelling:
        out.append(f"DWELL {o.zone} #{o.track} {now - o.since:.0f} s")
    inside = ([(z, p.track) for p in people for z in p.zones] if people is not None
              else [(o.zone, o.track) for o in s.occupants])
    since = {(o.zone, o.track): o.since for o in s.occupants}
    for zone, track in inside:
        if not any(d.zone == zone and d.track == track for d in s.dwelling):
            at = since.get((zone, track))
            out.append(f"KEEP-OUT {zone} #{track}"
                       + (f" {max(0.0, now - at):.0f} s" if at is not None else ""))
    for c in s.presence:
        if c.missing and not s.blind:  # held, a count is unknown: shown as "?" below
            out.append(f"MISSING {c.name}: {c.seen}/{c.expected} {display_name(c.label)}")
    return out


def _counts(s: StreamStatus, people: Sequence[PersonObject] | None) -> list[Segment]:
    parts: list[Segment] = []
    if s.zones:
        # an entry on the very frame drawn is not in the (slightly older) status yet
        known = {(o.zone, o.track) for o in s.occupants}
        new = {(z, p.track) for p in people or () for z in p.zones} - known
        parts.append(Segment(f"entries {s.violations + len(new)}"))
    for grade, n in s.inspected:
        ok = grade in s.passing
        parts.append(Segment(f"{display_name(grade)} {n} {'PASS' if ok else 'FAIL'}",
                             PASS_GREEN if ok else FAIL_RED))
    for line in s.lines:
        parts.append(Segment(f"{line.name}: " + " ".join(
            f"{d} {line.total(d)}" for d in line.directions)))
    for c in s.presence:
        shown = "?" if s.blind else f"{c.seen}/{c.expected}"
        parts.append(Segment(f"{c.name} {shown}"))
    out: list[Segment] = []
    for i, p in enumerate(parts):
        if i:
            out.append(Segment("  |  ", DIM))
        out.append(p)
    return out


def build_panel(status: RunStatus | None, camera: str, wall: float, *, details: bool = False,
                people: Sequence[PersonObject] | None = None) -> Panel:
    """The strip of ``camera`` at wall-clock ``wall``; with no status yet, its name and time.
    When there is room, the last line is this shift's totals, or, with ``details`` or no
    history, the inference line (time, dropped and skipped frames; the window's ``h``);
    ``people``: the drawn frame's people, whose zones decide the keep-out alarm.
    """
    clock = Segment(local_caption(wall), DIM)
    title = Segment(camera.upper().replace("_", " ") + "  ")
    s = next((x for x in status.streams if x.name == camera), None) if status else None
    if status is None or s is None:
        return Panel(((title, clock),), DIM, False, "live")
    health, dot, reason = health_of(status, s)
    alarms = alarms_of(s, people)
    # on the red strip of an alarm, every word is white: colour on red is unreadable
    first = (title, Segment(f"{health.upper()}: {reason}"[:78] + "  ", TEXT if alarms else dot),
             Segment(clock.text, TEXT if alarms else DIM))
    lines: list[tuple[Segment, ...]] = [first]
    if alarms:
        lines.append((Segment("  ".join(alarms)[:110]),))
    counts = _counts(s, people)
    if alarms:
        counts = [Segment(c.text) for c in counts]
    if counts:
        lines.append(tuple(counts))
    shift = status.shift.line(camera) if status.shift is not None else ""
    if len(lines) < 3 and (details or not shift):
        device = "Edge TPU" if status.accelerator.device == "edgetpu" else "CPU"
        extra = [f"inference {s.inference_ms:.0f} ms on {device}", f"dropped {s.dropped}"]
        if s.skipped:
            extra.append(f"skipped {s.skipped}")
        lines.append((Segment("   ".join(extra), DIM),))
    elif len(lines) < 3:
        lines.append((Segment(shift[:110], DIM),))  # this shift over every run
    return Panel(tuple(lines[:3]), dot, bool(alarms), health)
