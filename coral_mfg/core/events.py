"""Every event a run reports, one frozen dataclass per kind, and their one JSON form.

An event is made whole where it happens: its stamp (when, a unique id, the
station) and the picture it names are set by the maker, never added later,
so the event log, MQTT and the web view name it by the same id. Sinks
dispatch on the class, never on a string. :func:`to_json` gives the form the
event log writes and MQTT publishes: the kind first, then the event's own
fields in their order, the stamp as ``timestamp``, ``id`` and ``station``,
and optional fields only when set.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from coral_mfg.core.clock import iso_utc
from coral_mfg.core.status import RunStatus

#: A field left out of the JSON form while it is None.
OPTIONAL = {"optional": True}


@dataclass(frozen=True)
class Stamp:
    """When an event happened (wall clock), its unique id, and the station it is from."""

    wall: float
    id: str
    station: str


class Stamper:
    """Stamps the events of one run, and names the pictures of the kinds that have one.

    ``pictures(kind, stamp, camera)`` is the snapshot policy (a path, or None); ``started``
    is the run's start on the monotonic clock, for the ``time`` of run events.
    """

    def __init__(self, station: str,
                 pictures: Callable[[str, Stamp, str], str | None] | None = None) -> None:
        self.station = station
        self.pictures = pictures
        self.started = time.monotonic()

    def stamp(self, wall: float | None = None) -> Stamp:
        return Stamp(time.time() if wall is None else wall, uuid.uuid4().hex, self.station)

    def picture(self, kind: str, stamp: Stamp, camera: str) -> str | None:
        """The file of the picture of ``camera``'s event of ``kind``, or None."""
        return self.pictures(kind, stamp, camera) if self.pictures is not None else None

    def run_time(self, monotonic: float | None = None) -> float:
        """Seconds since the run started, as events carry it."""
        at = time.monotonic() if monotonic is None else monotonic
        return round(at - self.started, 4)


@dataclass(frozen=True, kw_only=True)
class KeepoutEnter:
    """A person is in a zone (after the debounce); ``entered_at`` is when the stay began
    (the first frame seen inside, before the debounce confirmed it)."""

    type: ClassVar[str] = "keepout_enter"
    zone: str
    track: int
    frame: int
    time: float
    stream: str
    stamp: Stamp
    snapshot: str | None = field(default=None, metadata=OPTIONAL)
    entered_at: str | None = field(default=None, metadata=OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class KeepoutExit:
    type: ClassVar[str] = "keepout_exit"
    zone: str
    track: int
    frame: int
    time: float
    seconds_in_zone: float
    stream: str
    stamp: Stamp
    entered_at: str | None = field(default=None, metadata=OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class ZoneDwellExceeded:
    """A person has stayed in a zone longer than its ``max_seconds``: once per stay."""

    type: ClassVar[str] = "zone_dwell_exceeded"
    zone: str
    track: int
    seconds: float
    max_seconds: float
    frame: int
    time: float
    stream: str
    stamp: Stamp
    entered_at: str | None = field(default=None, metadata=OPTIONAL)
    snapshot: str | None = field(default=None, metadata=OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class LineCrossed:
    """A tracked object crossed a counting line; an inspected object carries its running
    grade and whether it passes."""

    type: ClassVar[str] = "line_crossed"
    line: str
    direction: str
    track: int
    label: str
    frame: int
    time: float
    stream: str
    stamp: Stamp
    grade: str | None = field(default=None, metadata=OPTIONAL)
    passed: bool | None = field(default=None, metadata=OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class PresenceMissing:
    """Fewer objects than expected in a presence region, for the check's ``seconds``."""

    type: ClassVar[str] = "presence_missing"
    check: str
    label: str
    expected: int
    seen: int
    frame: int
    time: float
    stream: str
    stamp: Stamp
    snapshot: str | None = field(default=None, metadata=OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class PresenceRestored:
    type: ClassVar[str] = "presence_restored"
    check: str
    label: str
    expected: int
    seen: int
    frame: int
    time: float
    stream: str
    stamp: Stamp


@dataclass(frozen=True, kw_only=True)
class CameraBlind:
    """A camera cannot see (no signal, a stall, or no inference): its zones, lines and
    presence checks are unknown until ``camera_restored``, never clear."""

    type: ClassVar[str] = "camera_blind"
    stream: str
    reason: str
    time: float
    stamp: Stamp


@dataclass(frozen=True, kw_only=True)
class CameraRestored:
    type: ClassVar[str] = "camera_restored"
    stream: str
    blind_s: float
    time: float
    stamp: Stamp


@dataclass(frozen=True, kw_only=True)
class Graded:
    """An inspected object's final verdict, once, when its track ends (or the run does).

    With anomaly scoring, ``anomaly_score`` (a vote over its scored frames; 1.0 is the
    threshold) and ``anomalous`` too, once it was scored on a frame.
    """

    type: ClassVar[str] = "graded"
    label: str
    track: int
    grade: str
    passed: bool
    grade_score: float
    frames: int
    graded_frames: int
    frame: int
    time: float  # when that frame was captured, seconds since the run started
    stream: str
    stamp: Stamp
    snapshot: str | None = field(default=None, metadata=OPTIONAL)
    anomaly_score: float | None = field(default=None, metadata=OPTIONAL)
    anomalous: bool | None = field(default=None, metadata=OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class SourceLost:
    type: ClassVar[str] = "source_lost"
    stream: str
    reason: str
    time: float
    stamp: Stamp


@dataclass(frozen=True, kw_only=True)
class SourceRestored:
    type: ClassVar[str] = "source_restored"
    stream: str
    after_s: float
    time: float
    stamp: Stamp


@dataclass(frozen=True, kw_only=True)
class AcceleratorLost:
    """An inference process died or hung; ``process`` names it (``worker`` in JSON, the
    documented key), ``edgetpu_device`` the Edge TPU it drove (``usb:1``), if any."""

    type: ClassVar[str] = "accelerator_lost"
    device: str
    process: str = field(metadata={"json": "worker"})
    reason: str
    time: float
    stamp: Stamp
    edgetpu_device: str | None = field(default=None, metadata=OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class AcceleratorRestored:
    """An inference process answers again (``process``, on ``edgetpu_device`` if an Edge
    TPU), or inference moved back to the Edge TPU from the CPU (``from_``)."""

    type: ClassVar[str] = "accelerator_restored"
    device: str
    process: str | None = field(default=None, metadata={"json": "worker", **OPTIONAL})
    from_: str | None = field(default=None, metadata={"json": "from", **OPTIONAL})
    time: float
    stamp: Stamp
    edgetpu_device: str | None = field(default=None, metadata=OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class AcceleratorFallback:
    type: ClassVar[str] = "accelerator_fallback"
    device: str
    from_: str = field(metadata={"json": "from"})
    reason: str
    time: float
    stamp: Stamp


@dataclass(frozen=True, kw_only=True)
class ZonesReloaded:
    """A zone file was read again: the zones now in force (of camera ``stream``, when the
    station names its cameras)."""

    type: ClassVar[str] = "zones_reloaded"
    zones: tuple[str, ...]
    stream: str | None = field(default=None, metadata=OPTIONAL)
    time: float
    stamp: Stamp


@dataclass(frozen=True, kw_only=True)
class ZonesChanged:
    """Someone changed a camera's zones, lines or presence regions and they were saved
    and put in force: ``by`` names who (the token's role, or the window), never a
    secret; ``changes`` says what, one phrase per shape ("added zone 'walkway'")."""

    type: ClassVar[str] = "zones_changed"
    stream: str
    by: str
    changes: tuple[str, ...]
    zones: tuple[str, ...]
    file: str
    time: float
    stamp: Stamp


@dataclass(frozen=True, kw_only=True)
class ZonesError:
    type: ClassVar[str] = "zones_error"
    error: str
    stream: str | None = field(default=None, metadata=OPTIONAL)
    time: float
    stamp: Stamp


@dataclass(frozen=True, kw_only=True)
class OutputFault:
    """An output stopped writing; ``at`` is when (it may be logged later)."""

    type: ClassVar[str] = "output_fault"
    output: str
    reason: str
    at: str
    time: float
    stamp: Stamp


@dataclass(frozen=True, kw_only=True)
class OutputRestored:
    type: ClassVar[str] = "output_restored"
    output: str
    lost: int
    at: str
    time: float
    stamp: Stamp


@dataclass(frozen=True, kw_only=True)
class ModelWarning:
    """At start-up: the training report beside a classifier says it is not fit to run."""

    type: ClassVar[str] = "model_warning"
    model: str
    warning: str
    time: float
    stamp: Stamp


Event = (KeepoutEnter | KeepoutExit | ZoneDwellExceeded | LineCrossed | PresenceMissing
         | PresenceRestored | CameraBlind | CameraRestored | Graded | SourceLost
         | SourceRestored | AcceleratorLost | AcceleratorRestored | AcceleratorFallback
         | ZonesReloaded | ZonesChanged | ZonesError | OutputFault | OutputRestored
         | ModelWarning)
#: Where a producer hands its events (the run's context queues them for the outputs).
EventSink = Callable[[Event], None]


def event_json(event: Event) -> dict[str, Any]:
    """The event's JSON form: see the module's docstring."""
    out: dict[str, Any] = {"type": event.type}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if f.name == "stamp":
            out.update(timestamp=iso_utc(value.wall), id=value.id, station=value.station)
        elif value is None and f.metadata.get("optional"):
            continue
        else:
            out[f.metadata.get("json", f.name)] = list(value) if isinstance(value, tuple) else value
    return out


# --- the other records of the event log ---------------------------------------------------


def frame_record(stream: str, index: int, *, pts: float, time: float, wall: float,
                 device: str, objects: list[dict[str, Any]]) -> dict[str, Any]:
    """A processed frame's line in the event log: what was seen, where, when."""
    return {"type": "frame", "stream": stream, "frame": index, "pts": round(pts, 4),
            "time": round(time, 4), "timestamp": iso_utc(wall), "device": device,
            "objects": objects}


def summary_record(status: RunStatus) -> dict[str, Any]:
    """The summary a run ends with (the event log's last line, and the log's): station
    totals, and per camera what it saw."""
    streams = status.streams
    a = status.accelerator
    outputs = {o.name: o.as_dict() for o in status.outputs}
    if status.sink_failures:
        outputs["sink_failures"] = dict(status.sink_failures)
    return {
        "type": "summary",
        "timestamp": iso_utc(status.at),
        "station": status.station,
        "frames": {s.name: s.frames for s in streams},
        "dropped": {s.name: s.dropped for s in streams},
        "inspected": status.inspected,
        "keepout_violations": status.violations,
        "violations_by_zone": status.entries,
        "fps": {s.name: round(s.fps_run, 2) for s in streams},
        "errors": {s.name: s.errors for s in streams},
        "source_lost": {s.name: s.source_lost for s in streams},
        "skipped": {s.name: s.skipped for s in streams},
        "cameras": {s.name: {"roles": list(s.roles), "inspected": dict(s.inspected),
                             "violations_by_zone": dict(s.entries)} for s in streams},
        "device": a.device,
        "accelerator": {"device": a.device, "lost": a.lost, "restored": a.restored,
                        "fallback": a.fallbacks, "failed_frames": a.failed_frames},
        "outputs": outputs,
    }
