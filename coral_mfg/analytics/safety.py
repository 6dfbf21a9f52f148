"""Worker safety: people against keep-out zones, with debounced enter and exit, and a
dwell alarm for a stay longer than a zone allows.

A person counts as in a zone only after ``enter_frames`` consecutive frames
inside, and leaves it after ``exit_frames`` consecutive frames outside, so an
alarm does not flicker on a box that jitters across the line. A zone with
``max_seconds`` raises one dwell alarm per stay that lasts longer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from coral_mfg.analytics.tracking import Tracker
from coral_mfg.analytics.zones import KeepoutZone
from coral_mfg.config.settings import TrackingConfig
from coral_mfg.core.clock import iso_utc
from coral_mfg.core.detections import Detections, as_box, pixel_boxes
from coral_mfg.core.events import KeepoutEnter, KeepoutExit, Stamper, ZoneDwellExceeded
from coral_mfg.core.frame import Frame
from coral_mfg.core.geometry import letterbox
from coral_mfg.core.results import PersonObject, SnapshotRequest, ZoneOutline
from coral_mfg.inference.plan import PERSON_ID


class ZoneStore:
    """The zones in force, replaced whole by a reload or the editor; read by every frame.

    A zone renamed in the file (same place, or same position in the list) keeps
    the people in it: the rename is handed to the debounce, not an exit and an entry.
    """

    def __init__(self, zones: tuple[KeepoutZone, ...]) -> None:
        self._zones = zones
        self._lock = threading.Lock()
        self._renames: list[tuple[str, str]] = []
        self.error: str | None = None

    @property
    def zones(self) -> tuple[KeepoutZone, ...]:
        return self._zones

    def replace(self, zones: tuple[KeepoutZone, ...]) -> None:
        """Zones read or written whole: in force, and any refusal of the file is over."""
        self.preview(zones)
        self.error = None

    def preview(self, zones: tuple[KeepoutZone, ...]) -> None:
        """Zones being edited, in force at once but not saved: a refusal of the file
        stands until the file is read or written whole again."""
        with self._lock:
            self._renames.extend(_renames(self._zones, zones))
            self._zones = zones

    def take_renames(self) -> list[tuple[str, str]]:
        """(old, new) names since the last call, oldest first."""
        with self._lock:
            renames, self._renames = self._renames, []
        return renames

    def fail(self, message: str) -> None:
        """Keep the last good zones; remember why the new ones were refused."""
        self.error = message


def _renames(
    old: tuple[KeepoutZone, ...], new: tuple[KeepoutZone, ...]
) -> list[tuple[str, str]]:
    """Zones that only changed their name: same corners, else same position in the list."""
    gone = [z for z in old if z.name not in {n.name for n in new}]
    added = [z for z in new if z.name not in {o.name for o in old}]
    out: list[tuple[str, str]] = []
    for zone in gone:
        same = [z for z in added if z.points.shape == zone.points.shape
                and np.allclose(z.points, zone.points)]
        if not same:
            index = old.index(zone)
            same = [z for z in added if index < len(new) and new[index] is z]
        if same:
            out.append((zone.name, same[0].name))
            added.remove(same[0])
    return out


#: The debounce's edges: a person entered or left a zone, or stayed too long.
ENTER, EXIT, DWELL = "enter", "exit", "dwell"
#: A zone gone from the file keeps who is in it this long before they leave it: a
#: file saved in two steps must not turn one stay into an exit and a second entry.
GONE_GRACE_S = 5.0


@dataclass
class _Presence:
    inside: int = 0
    outside: int = 0
    active: bool = False
    since: float = 0.0  # when it became active (the frame's capture time)
    started: float = 0.0  # the wall-clock time of the first frame of the stay
    dwelled: bool = False  # this stay's dwell alarm was given


@dataclass
class ZoneDebounce:
    """Hysteresis per (track, zone): the events it emits are the enter and exit edges."""

    states: dict[tuple[int, str], _Presence] = field(default_factory=dict)
    violations: dict[str, int] = field(default_factory=dict)
    #: who is in which zone after the last frame, since when (monotonic); replaced whole,
    #: so other threads can read it
    current: tuple[tuple[str, int, float], ...] = ()
    #: how long each (zone, track) that just left was inside, in seconds; taken by the caller
    stayed: dict[tuple[str, int], float] = field(default_factory=dict)
    #: zones gone from the file while someone was in them, since when
    gone_since: dict[str, float] = field(default_factory=dict)
    #: when (wall clock) each (zone, track) with an edge this frame began its stay; taken by
    #: the caller
    began: dict[tuple[str, int], float] = field(default_factory=dict)
    #: (zone, track, since) of stays longer than their zone's max_seconds now
    dwelling: tuple[tuple[str, int, float], ...] = ()

    def update(
        self, hits: dict[str, dict[int, bool]], zones: tuple[KeepoutZone, ...],
        now: float | None = None, wall: float | None = None,
    ) -> list[tuple[str, str, int]]:
        """``hits[zone][track]`` for this frame (at ``now`` on the camera's clock, ``wall``
        on the wall clock); returns (kind, zone, track) events. A track missing from
        ``hits`` this frame counts as outside.
        """
        now = time.monotonic() if now is None else now
        wall = time.time() if wall is None else wall
        events: list[tuple[str, str, int]] = []
        by_name = {z.name: z for z in zones}
        keys = {(t, z) for z, tracks in hits.items() for t in tracks} | set(self.states)
        for name in [n for n in self.gone_since if n in by_name]:
            del self.gone_since[name]  # back: who was in it is in it still, no new entry
        for track, zone_name in sorted(keys):
            zone = by_name.get(zone_name)
            state = self.states.setdefault((track, zone_name), _Presence())
            if zone is None and state.active and (
                    now - self.gone_since.setdefault(zone_name, now) < GONE_GRACE_S):
                continue  # perhaps a file read half-written: the zone may come back
            if zone is None or not zone.enabled:  # zone removed or disabled: leave it now
                if state.active:
                    events.append((EXIT, zone_name, track))
                    self.stayed[(zone_name, track)] = now - state.since
                    self.began[(zone_name, track)] = state.started
                del self.states[(track, zone_name)]
                continue
            if hits.get(zone_name, {}).get(track, False):
                if state.inside == 0 and not state.active:
                    state.started = wall
                state.inside += 1
                state.outside = 0
                if not state.active and state.inside >= zone.enter_frames:
                    state.active, state.since, state.dwelled = True, now, False
                    self.violations[zone_name] = self.violations.get(zone_name, 0) + 1
                    events.append((ENTER, zone_name, track))
                    self.began[(zone_name, track)] = state.started
            else:
                state.outside += 1
                state.inside = 0
                if state.active and state.outside >= zone.exit_frames:
                    state.active = False
                    events.append((EXIT, zone_name, track))
                    self.stayed[(zone_name, track)] = now - state.since
                    self.began[(zone_name, track)] = state.started
                if not state.active and state.outside > zone.exit_frames + zone.enter_frames:
                    del self.states[(track, zone_name)]
            limit = zone.max_seconds
            if (state.active and not state.dwelled and limit is not None
                    and now - state.since > limit):
                state.dwelled = True
                events.append((DWELL, zone_name, track))
                self.began[(zone_name, track)] = state.started
        self.current = tuple(sorted((z, t, s.since) for (t, z), s in self.states.items()
                                    if s.active))
        over = {z.name: z.max_seconds for z in zones if z.max_seconds is not None}
        self.dwelling = tuple((z, t, since) for z, t, since in self.current
                              if z in over and now - since > over[z])
        for name in [n for n in self.gone_since if not any(z == n for z, _, _ in self.current)]:
            del self.gone_since[name]
        return events

    def rename(self, old: str, new: str) -> None:
        """A zone got a new name: who is in it stays in it, its count goes with it."""
        for track, zone in [k for k in self.states if k[1] == old]:
            self.states[(track, new)] = self.states.pop((track, zone))
        if old in self.violations:
            self.violations[new] = self.violations.get(new, 0) + self.violations.pop(old)

    def active(self, track: int) -> list[str]:
        return sorted(z for (t, z), s in self.states.items() if t == track and s.active)

    def occupancy(self) -> tuple[tuple[str, int, float], ...]:
        """(zone, track, since) for everyone in a zone now."""
        return self.current


@dataclass(frozen=True)
class SafetyPart:
    """What the safety role made of one frame."""

    objects: tuple[PersonObject, ...]
    events: tuple[KeepoutEnter | KeepoutExit | ZoneDwellExceeded, ...]
    snapshots: tuple[SnapshotRequest, ...]
    zones: tuple[ZoneOutline, ...]


@dataclass
class SafetyRole:
    """A camera's safety role: people, tracked and tested against its zones in force.

    ``finish`` runs for one frame after the other, in order, under the camera's lock.
    """

    camera: str
    store: ZoneStore
    tracker: Tracker
    out_size: tuple[int, int]
    tracking: TrackingConfig
    stamper: Stamper
    debounce: ZoneDebounce = field(default_factory=ZoneDebounce)

    def people(self, detections: Detections) -> Detections:
        """People on the frame, one box each; safe to run for several frames at once."""
        t = self.tracking
        people = detections.of_class(PERSON_ID, self.tracker.low)
        return people.deduplicated(t.duplicate_iou, t.duplicate_inside)

    def outlines(self) -> tuple[ZoneOutline, ...]:
        return tuple(z.outline for z in self.store.zones if z.enabled)

    def finish(self, frame: Frame, people: Detections) -> SafetyPart:
        """Tracks, zones and events of one frame."""
        zones = self.store.zones
        for old, new in self.store.take_renames():
            self.debounce.rename(old, new)
        picture = letterbox(self.out_size, frame.size)
        seen = self.tracker.update(people.placed(picture, self.out_size).xyxy, people.scores)
        boxes = pixel_boxes(np.array([o.box for o in seen]).reshape(-1, 4), self.out_size)
        hits: dict[str, dict[int, bool]] = {}
        for zone in zones:
            if zone.enabled:
                inside = zone.contains_boxes(boxes)
                hits[zone.name] = {o.track.id: bool(h) for o, h in zip(seen, inside, strict=True)}
        edges = self.debounce.update(hits, zones, frame.clock, frame.wall)
        objects = []
        for box, obs in zip(boxes, seen, strict=True):
            inside_zones = self.debounce.active(obs.track.id)
            objects.append(PersonObject(obs.score, as_box(box), bool(inside_zones), obs.track.id,
                                        tuple(inside_zones), obs.predicted,
                                        self.tracker.is_counted(obs.track)))
        limits = {z.name: z.max_seconds for z in zones}
        events = tuple(self._event(kind, zone, track, frame, limits.get(zone))
                       for kind, zone, track in edges)
        shots = tuple(SnapshotRequest(e) for e in events
                      if isinstance(e, KeepoutEnter | ZoneDwellExceeded)
                      and e.snapshot is not None)
        return SafetyPart(tuple(objects), events, shots,
                          tuple(z.outline for z in zones if z.enabled))

    def _event(self, kind: str, zone: str, track: int, frame: Frame, limit: float | None
               ) -> KeepoutEnter | KeepoutExit | ZoneDwellExceeded:
        stamp = self.stamper.stamp(frame.wall)
        at = self.stamper.run_time(frame.captured)
        entered_at = iso_utc(self.debounce.began.pop((zone, track), frame.wall))
        if kind == ENTER:
            return KeepoutEnter(zone=zone, track=track, frame=frame.index, time=at,
                                stream=self.camera, stamp=stamp,
                                snapshot=self.stamper.picture(KeepoutEnter.type, stamp,
                                                              self.camera),
                                entered_at=entered_at)
        if kind == DWELL:
            since = next((s for z, t, s in self.debounce.current if (z, t) == (zone, track)),
                         frame.clock)
            return ZoneDwellExceeded(
                zone=zone, track=track, seconds=round(frame.clock - since, 2),
                max_seconds=limit or 0.0, frame=frame.index, time=at, stream=self.camera,
                stamp=stamp, entered_at=entered_at,
                snapshot=self.stamper.picture(ZoneDwellExceeded.type, stamp, self.camera))
        stayed = self.debounce.stayed.pop((zone, track), 0.0)
        return KeepoutExit(zone=zone, track=track, frame=frame.index, time=at,
                           seconds_in_zone=round(stayed, 2), stream=self.camera, stamp=stamp,
                           entered_at=entered_at)

    @property
    def violations(self) -> int:
        """Entries into a zone (debounced), over all zones."""
        return sum(self.debounce.violations.copy().values())
