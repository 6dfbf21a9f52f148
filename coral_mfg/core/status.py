"""The run's status: one immutable snapshot, made by the run and read by every view.

The window's HUD, the web page, ``/api/status``, ``/healthz``, ``/metrics``,
MQTT's state topics and the summary are all made from a :class:`RunStatus`,
so they can never disagree, and no view reaches into the run's threads.
The run (``runtime.status``) makes a new one when something happens (an
entry, a verdict, a fault) and at a fixed rate otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from coral_mfg.core.clock import iso_utc
from coral_mfg.core.tally import PeriodTotals

#: The states a stream can be in, as MQTT, the web view and health report them.
LIVE, NO_SIGNAL, ERROR, PAUSED, ENDED = "live", "no_signal", "error", "paused", "ended"


@dataclass(frozen=True)
class ZoneStatus:
    name: str
    enabled: bool
    mode: str


@dataclass(frozen=True)
class Occupant:
    """Someone in a zone now: since when (monotonic), for the time in zone."""

    zone: str
    track: int
    since: float  # on the camera's clock (StreamStatus.clock)


@dataclass(frozen=True)
class LineStatus:
    """A counting line's crossings so far: (direction, grade or None, count)."""

    name: str
    directions: tuple[str, str]
    counts: tuple[tuple[str, str | None, int], ...]

    def total(self, direction: str) -> int:
        return sum(n for d, _, n in self.counts if d == direction)


@dataclass(frozen=True)
class PresenceStatus:
    """A presence check now: how many are seen, and whether the shortfall is reported."""

    name: str
    label: str
    expected: int
    seen: int
    missing: bool


@dataclass(frozen=True)
class StreamStatus:
    """One camera now: its state (and why, in words, when it is not live), its counts, its
    zones and who is in them, its inspected objects by grade."""

    name: str
    source: str  # the input: a file, /dev/videoN or a URL (its password starred)
    #: LIVE, NO_SIGNAL, ERROR, PAUSED (by the operator: nothing is inspected) or ENDED (a
    #: file played to its end, or --max_frames reached, while other cameras run on)
    state: str
    reason: str | None  # what the screen says when it shows no live video
    fps: float  # over the last seconds
    fps_run: float  # over the whole run
    inference_ms: float  # median of the recent frames' model calls
    frames: int
    dropped: int
    errors: int
    source_lost: int
    roles: tuple[str, ...] = ()
    skipped: int = 0  # frames held by the motion gate or the detect_fps cap
    zones: tuple[ZoneStatus, ...] = ()
    occupants: tuple[Occupant, ...] = ()
    entries: tuple[tuple[str, int], ...] = ()  # keep-out entries by zone
    inspected: tuple[tuple[str, int], ...] = ()  # counted objects by grade
    dwelling: tuple[Occupant, ...] = ()  # stays longer than their zone allows, now
    lines: tuple[LineStatus, ...] = ()
    presence: tuple[PresenceStatus, ...] = ()
    #: the camera's clock at its last frame (Frame.clock): occupants' and dwellers' ``since``
    #: are on it
    clock: float = 0.0
    passing: tuple[str, ...] = ()  # the grades that pass, on an inspection camera

    @property
    def live(self) -> bool:
        return self.state == LIVE

    @property
    def blind(self) -> str | None:
        """Why the camera cannot see now (no signal, a stall, no inference), or None: while
        it is blind its zones, lines and presence checks are unknown, never clear."""
        return None if self.state == LIVE else (self.reason or self.state)

    def occupancy(self, zone: str) -> int | None:
        """People in a zone now; None (unknown) while the camera is blind."""
        return None if self.blind else self.in_zone(zone)

    def in_zone(self, zone: str) -> int:
        return sum(1 for o in self.occupants if o.zone == zone)

    @property
    def violations(self) -> int:
        return sum(n for _, n in self.entries)


@dataclass(frozen=True)
class DeviceLoad:
    """One inference process now: the device it drives, and how loaded it is (its median
    detection time, the share of recent time it worked, the frames per second it could
    take at this station's work)."""

    process: str  # "edgetpu-0", "cpu-1"
    device: str  # "usb:0", "pci:0", "edgetpu" (any), "cpu"
    state: str  # up, starting, down, stopped
    median_ms: float
    busy_share: float
    capacity_fps: float


@dataclass(frozen=True)
class AcceleratorStatus:
    device: str  # "cpu" or "edgetpu": where inference runs now
    detector: str  # the detector's name
    down: str | None  # why no inference runs now, or None
    fallback: bool  # on the CPU after the Edge TPU failed
    lost: int
    restored: int
    fallbacks: int
    failed_frames: int
    devices: tuple[DeviceLoad, ...] = ()  # the processes in use, in order


@dataclass(frozen=True)
class OutputStatus:
    """One output's counts (written, dropped, lost, error, and its own) as its summary says."""

    name: str
    counts: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.counts)

    def get(self, key: str) -> Any:
        return dict(self.counts).get(key)


@dataclass(frozen=True)
class RunStatus:
    """Everything a view shows about a run, at one moment."""

    at: float  # wall clock
    uptime: float  # seconds since the process began (monotonic)
    station: str
    streams: tuple[StreamStatus, ...]  # the cameras, in the config's order
    accelerator: AcceleratorStatus
    outputs: tuple[OutputStatus, ...] = ()
    sink_failures: tuple[tuple[str, int], ...] = ()
    output_warning: str | None = None  # a failing output or a nearly full disk
    zone_error: str | None = None  # a refused zone edit
    model_warning: str | None = None  # a classifier its training report calls unfit
    paused: bool = False
    #: this shift's counts over every run of it (the history's), beside this run's own
    shift: PeriodTotals | None = None

    def stream(self, name: str) -> StreamStatus:
        return next(s for s in self.streams if s.name == name)

    @property
    def violations(self) -> int:
        return sum(s.violations for s in self.streams)

    @property
    def entries(self) -> dict[str, int]:
        """Keep-out entries by zone, over every camera."""
        out: dict[str, int] = {}
        for s in self.streams:
            for zone, n in s.entries:
                out[zone] = out.get(zone, 0) + n
        return out

    @property
    def inspected(self) -> dict[str, int]:
        """Counted objects by grade, over every camera."""
        out: dict[str, int] = {}
        for s in self.streams:
            for grade, n in s.inspected:
                out[grade] = out.get(grade, 0) + n
        return out

    @property
    def healthy(self) -> bool:
        return self.accelerator.down is None and all(s.live for s in self.streams)


def stream_record(status: RunStatus, stream: StreamStatus, *, stopped: bool = False
                  ) -> dict[str, Any]:
    """A camera's state as plant systems get it (MQTT's retained ``<camera>/state``)."""
    return {"status": "stopped" if stopped else stream.state, "reason": stream.reason,
            "blind": not stopped and stream.blind is not None,
            "fps": round(stream.fps, 2), "frames": stream.frames, "dropped": stream.dropped,
            "skipped": stream.skipped, "errors": stream.errors,
            "device": status.accelerator.device, "roles": list(stream.roles),
            "timestamp": iso_utc(status.at), "station": status.station}


def line_record(line: LineStatus) -> dict[str, Any]:
    """A line's counts: per direction, and per direction and grade for inspected objects."""
    out: dict[str, Any] = {d: line.total(d) for d in line.directions}
    graded = {f"{d}/{g}": n for d, g, n in line.counts if g is not None}
    if graded:
        out["by_grade"] = graded
    return out


def presence_record(stream: StreamStatus, check: PresenceStatus) -> dict[str, Any]:
    """A presence check as plant systems get it; ``unknown`` while the camera is blind."""
    if stream.blind:
        return {"state": "unknown", "expected": check.expected, "seen": None,
                "missing": None, "label": check.label}
    return {"state": "missing" if check.missing else "ok", "expected": check.expected,
            "seen": check.seen, "missing": check.missing, "label": check.label}


def device_record(device: DeviceLoad) -> dict[str, Any]:
    """An inference process's load as the web view and the benchmark give it."""
    return {"process": device.process, "device": device.device, "state": device.state,
            "median_ms": round(device.median_ms, 2), "busy_share": round(device.busy_share, 3),
            "capacity_fps": round(device.capacity_fps, 1)}


def summary_line(summary: dict[str, Any]) -> str:
    """The summary as one JSON line, like the event log's last line."""
    return json.dumps(summary, separators=(",", ":"))
