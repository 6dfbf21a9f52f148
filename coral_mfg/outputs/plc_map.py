"""The PLC address map: every value the OPC UA and Modbus servers offer, where it is, and
what it reads now.

The map is made once, at start-up, from the station's cameras in the config's order;
``coral-mfg plc-map`` prints the same map from the same function, so the addresses a
PLC programmer copies are the ones the running station serves. Zones added while the
station runs join the map at the next start.

OPC UA: every node is a string node id in namespace 2 (``urn:coral-mfg``), its path the
browse path under ``Objects`` (``CoralMfg/<station>/<camera>/Zones/<zone>/Alarm``), each
name percent-encoded where it holds ``/`` or another reserved character
(:func:`~coral_mfg.core.names.name_part`); browse names are the names as written.

Modbus: 0-based protocol addresses. The station has addresses 0-999; the Nth camera of
the config (counting disabled ones, so turning a camera off moves no other) has
``1000 * N`` to ``1000 * N + 999``, with a fixed offset for each kind of value, so a
zone added to one camera moves nothing of another. A 32-bit count takes two input
registers, the high word first (big-endian words, "ABCD"); counts wrap at 2**32.

Blind is unsafe: while a camera cannot see (or before the first status, or when the
status stops coming), its zone alarms and presence alarms read true, occupancy and
counts seen read -1 (65535 in a register), and its ``blind`` bit says why in
``BlindReason``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from coral_mfg.core.names import name_part
from coral_mfg.core.status import RunStatus, StreamStatus

NAMESPACE = "urn:coral-mfg"
#: asyncua gives index 1 to the server's own URI; ours is the next.
NAMESPACE_INDEX = 2
ROOT = "CoralMfg"

DISCRETE_INPUT, INPUT_REGISTER = "discrete_input", "input_register"
CAMERA_BLOCK = 1000
#: Offsets in a camera's block, and how many of each kind fit.
DI_BLIND, DI_REJECT, DI_LAST_PASSED = 0, 1, 2
DI_ZONE_ALARM, DI_ZONE_DWELL, DI_PRESENCE = 100, 300, 600
IR_FPS, IR_REJECTS, IR_LAST_GRADE = 1, 2, 4
IR_ZONES, IR_LINES, IR_PRESENCE, IR_GRADES = 100, 400, 600, 700
LIMITS = {"zones": 100, "lines": 50, "presence checks": 100, "grades": 150}
#: Station addresses.
DI_OK, DI_TOGGLE, IR_HEARTBEAT = 0, 1, 0
UNKNOWN = -1

BOOLEAN, INT32, UINT32, UINT64, DOUBLE, STRING = (
    "Boolean", "Int32", "UInt32", "UInt64", "Double", "String")


@dataclass(frozen=True)
class CameraLayout:
    """What of a camera the PLC sees: its names, in the config's order."""

    name: str
    slot: int  # 1 to 8: its Modbus block
    zones: tuple[str, ...] = ()
    lines: tuple[tuple[str, tuple[str, str]], ...] = ()  # name, directions
    presence: tuple[str, ...] = ()
    grades: tuple[str, ...] = ()  # an inspection camera's, in the classifier's order
    reject: bool = False
    reject_line: str | None = None
    reject_pulse_s: float = 0.5

    @property
    def inspection(self) -> bool:
        return bool(self.grades)

    def too_many(self) -> str | None:
        """What does not fit the camera's Modbus block, or None."""
        counts = {"zones": len(self.zones), "lines": len(self.lines),
                  "presence checks": len(self.presence), "grades": len(self.grades)}
        for kind, n in counts.items():
            if n > LIMITS[kind]:
                return f"camera {self.name} has {n} {kind}; the Modbus map has room for " \
                       f"{LIMITS[kind]}"
        return None


@dataclass(frozen=True)
class StationLayout:
    station: str
    cameras: tuple[CameraLayout, ...]


@dataclass(frozen=True)
class ModbusRef:
    table: str  # DISCRETE_INPUT or INPUT_REGISTER
    address: int
    count: int


@dataclass(frozen=True)
class Point:
    """One value a PLC can read: its name in the map, its OPC UA type, browse path (names
    as written, under Objects) and node id, and where it is in Modbus, if anywhere."""

    name: str
    type: str
    path: tuple[str, ...]
    modbus: ModbusRef | None

    @property
    def node_id(self) -> str:
        return f"ns={NAMESPACE_INDEX};s={string_id(self.path)}"

    def record(self) -> dict[str, Any]:
        """The point as ``plc-map --format json`` prints it."""
        modbus = None if self.modbus is None else {
            "table": self.modbus.table, "address": self.modbus.address,
            "count": self.modbus.count}
        return {"name": self.name, "type": self.type, "opcua": self.node_id,
                "modbus": modbus}


def string_id(path: tuple[str, ...]) -> str:
    """A browse path as the string of its node id: each name one encoded level."""
    return "/".join(name_part(p) for p in path)


def points(layout: StationLayout) -> list[Point]:
    """Every point of the station, in the order of the map."""
    st = layout.station
    station = (ROOT, st)
    out = [
        Point(f"{_p(st)}/health/ok", BOOLEAN, (*station, "Health", "Ok"),
              ModbusRef(DISCRETE_INPUT, DI_OK, 1)),
        Point(f"{_p(st)}/health/heartbeat", UINT32, (*station, "Health", "Heartbeat"),
              ModbusRef(INPUT_REGISTER, IR_HEARTBEAT, 2)),
        Point(f"{_p(st)}/health/heartbeat_toggle", BOOLEAN,
              (*station, "Health", "HeartbeatToggle"), ModbusRef(DISCRETE_INPUT, DI_TOGGLE, 1)),
    ]
    for camera in layout.cameras:
        out.extend(_camera_points(st, camera))
    return out


def _camera_points(st: str, c: CameraLayout) -> Iterator[Point]:
    base = CAMERA_BLOCK * c.slot
    name = f"{_p(st)}/{_p(c.name)}"
    path = (ROOT, st, c.name)

    def di(offset: int) -> ModbusRef:
        return ModbusRef(DISCRETE_INPUT, base + offset, 1)

    def ir(offset: int, count: int = 1) -> ModbusRef:
        return ModbusRef(INPUT_REGISTER, base + offset, count)

    yield Point(f"{name}/state", STRING, (*path, "State"), None)
    yield Point(f"{name}/fps", DOUBLE, (*path, "Fps"), ir(IR_FPS))
    yield Point(f"{name}/blind", BOOLEAN, (*path, "Blind"), di(DI_BLIND))
    yield Point(f"{name}/blind_reason", STRING, (*path, "BlindReason"), None)
    for i, zone in enumerate(c.zones):
        z, zp = f"{name}/zones/{_p(zone)}", (*path, "Zones", zone)
        yield Point(f"{z}/occupancy", INT32, (*zp, "Occupancy"), ir(IR_ZONES + 3 * i))
        yield Point(f"{z}/entries", UINT64, (*zp, "Entries"), ir(IR_ZONES + 3 * i + 1, 2))
        yield Point(f"{z}/alarm", BOOLEAN, (*zp, "Alarm"), di(DI_ZONE_ALARM + i))
        yield Point(f"{z}/dwell", BOOLEAN, (*zp, "DwellAlarm"), di(DI_ZONE_DWELL + i))
    for i, (line, directions) in enumerate(c.lines):
        for j, direction in enumerate(directions):
            yield Point(f"{name}/lines/{_p(line)}/{_p(direction)}", UINT64,
                        (*path, "Lines", line, direction), ir(IR_LINES + 4 * i + 2 * j, 2))
    for i, check in enumerate(c.presence):
        p, pp = f"{name}/presence/{_p(check)}", (*path, "Presence", check)
        yield Point(f"{p}/count", INT32, (*pp, "Count"), ir(IR_PRESENCE + i))
        yield Point(f"{p}/missing", BOOLEAN, (*pp, "Missing"), di(DI_PRESENCE + i))
    if c.inspection:
        for i, grade in enumerate(c.grades):
            yield Point(f"{name}/grades/{_p(grade)}", UINT64, (*path, "Grades", grade),
                        ir(IR_GRADES + 2 * i, 2))
        yield Point(f"{name}/last_grade", STRING, (*path, "LastGrade"), None)
        yield Point(f"{name}/last_grade_index", INT32, (*path, "LastGradeIndex"),
                    ir(IR_LAST_GRADE))
        yield Point(f"{name}/last_grade_passed", BOOLEAN, (*path, "LastGradePassed"),
                    di(DI_LAST_PASSED))
    if c.reject:
        yield Point(f"{name}/reject", BOOLEAN, (*path, "Reject"), di(DI_REJECT))
        yield Point(f"{name}/rejects", UINT64, (*path, "Rejects"), ir(IR_REJECTS, 2))


def _p(name: str) -> str:
    return name_part(name)


def table(entries: list[Point]) -> str:
    """The map as a table a person reads (``plc-map``'s default)."""
    rows = [("name", "type", "opcua", "modbus")]
    for e in entries:
        where = "-"
        if e.modbus is not None:
            kind = "DI" if e.modbus.table == DISCRETE_INPUT else "IR"
            last = e.modbus.address + e.modbus.count - 1
            where = f"{kind} {e.modbus.address}" + (f"-{last}" if last != e.modbus.address
                                                    else "")
        rows.append((e.name, e.type, e.node_id, where))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}"
                     for r in rows)


# --- what the points read ---------------------------------------------------------------


class Baseline:
    """The counts when an admin last reset them: the PLC reads counts since then, while
    the event log, the summary and the other views keep the run's totals. Shared by the
    OPC UA and Modbus servers, so a reset is seen by both."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at: dict[str, int] = {}
        self._latest: dict[str, int] = {}
        self.resets = 0

    def since(self, name: str, total: int) -> int:
        with self._lock:
            self._latest[name] = total
            return max(0, total - self._at.get(name, 0))

    def reset(self) -> None:
        with self._lock:
            self._at = dict(self._latest)
            self.resets += 1


@dataclass
class CameraMemory:
    """What a camera's points remember between statuses: the last verdict, the rejects and
    the reject signal's end."""

    last_grade: str = ""
    last_index: int = 0  # 1 + the grade's index; 0 before the first verdict
    last_passed: bool = False
    rejects: int = 0
    reject_until: float = 0.0  # monotonic


@dataclass
class PlcState:
    """Everything the points read, as one server sees it (each server has its own, and
    its own clock for the heartbeat and the reject pulse)."""

    layout: StationLayout
    baseline: Baseline
    status: RunStatus | None = None
    status_at: float = -1e9  # monotonic, when the newest status came
    heartbeat: int = 0
    memory: dict[str, CameraMemory] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for c in self.layout.cameras:
            self.memory.setdefault(c.name, CameraMemory())

    def graded(self, camera: str, grade: str, passed: bool) -> None:
        c = next((c for c in self.layout.cameras if c.name == camera), None)
        m = self.memory.get(camera)
        if c is None or m is None:
            return
        m.last_grade, m.last_passed = grade, passed
        m.last_index = c.grades.index(grade) + 1 if grade in c.grades else 0

    def rejected(self, camera: str, now: float) -> None:
        c = next(c for c in self.layout.cameras if c.name == camera)
        m = self.memory[camera]
        m.rejects += 1
        m.reject_until = max(m.reject_until, now + c.reject_pulse_s)

    def next_pulse_end(self, now: float) -> float | None:
        ends = [m.reject_until for m in self.memory.values() if m.reject_until > now]
        return min(ends) if ends else None

    def values(self, now: float, stale_s: float) -> dict[str, Any]:
        """Every point's value now, by name."""
        st = _p(self.layout.station)
        status = self.status if now - self.status_at <= stale_s else None
        out: dict[str, Any] = {
            f"{st}/health/ok": status is not None and status.healthy,
            f"{st}/health/heartbeat": self.heartbeat % 2**32,
            f"{st}/health/heartbeat_toggle": self.heartbeat % 2 == 1,
        }
        for c in self.layout.cameras:
            stream = _stream(status, c.name)
            out.update(self._camera(st, c, stream, now, self._why_blind(status, stream)))
        return out

    @staticmethod
    def _why_blind(status: RunStatus | None, stream: StreamStatus | None) -> str | None:
        if status is None:
            return "NO STATUS: the station is starting, or has stopped reporting"
        if stream is None:
            return "not running"
        return stream.blind

    def _camera(self, st: str, c: CameraLayout, s: StreamStatus | None, now: float,
                blind: str | None) -> dict[str, Any]:
        name = f"{st}/{_p(c.name)}"
        out: dict[str, Any] = {
            f"{name}/state": "unknown" if s is None else s.state,
            f"{name}/fps": 0.0 if s is None else round(s.fps, 1),
            f"{name}/blind": blind is not None,
            f"{name}/blind_reason": blind or "",
        }
        zones = {z.name: z for z in s.zones} if s is not None else {}
        entries = dict(s.entries) if s is not None else {}
        for zone in c.zones:
            z = f"{name}/zones/{_p(zone)}"
            status = zones.get(zone)
            enabled = status is None or status.enabled  # a zone no longer there: not checked
            people = None if s is None or blind is not None else s.in_zone(zone)
            out[f"{z}/occupancy"] = UNKNOWN if people is None else people
            out[f"{z}/alarm"] = enabled and (people is None or people > 0)
            out[f"{z}/dwell"] = s is not None and any(o.zone == zone for o in s.dwelling)
            out[f"{z}/entries"] = self.baseline.since(f"{z}/entries", entries.get(zone, 0))
        lines = {line.name: line for line in s.lines} if s is not None else {}
        for line, directions in c.lines:
            found = lines.get(line)
            for direction in directions:
                key = f"{name}/lines/{_p(line)}/{_p(direction)}"
                total = found.total(direction) if found is not None else 0
                out[key] = self.baseline.since(key, total)
        checks = {p.name: p for p in s.presence} if s is not None else {}
        for check in c.presence:
            p = f"{name}/presence/{_p(check)}"
            seen = checks.get(check)
            known = seen is not None and blind is None
            out[f"{p}/count"] = seen.seen if known and seen is not None else UNKNOWN
            out[f"{p}/missing"] = not known or (seen is not None and seen.missing)
        if c.inspection:
            inspected = dict(s.inspected) if s is not None else {}
            for grade in c.grades:
                key = f"{name}/grades/{_p(grade)}"
                out[key] = self.baseline.since(key, inspected.get(grade, 0))
            m = self.memory[c.name]
            out[f"{name}/last_grade"] = m.last_grade
            out[f"{name}/last_grade_index"] = m.last_index
            out[f"{name}/last_grade_passed"] = m.last_passed
        if c.reject:
            m = self.memory[c.name]
            out[f"{name}/reject"] = now < m.reject_until
            out[f"{name}/rejects"] = self.baseline.since(f"{name}/rejects", m.rejects)
        return out


def _stream(status: RunStatus | None, name: str) -> StreamStatus | None:
    if status is None:
        return None
    return next((s for s in status.streams if s.name == name), None)


def registers(point: Point, value: Any) -> list[int] | list[bool]:
    """A point's value as Modbus sees it: a bit, one register (a count seen, -1 as 65535;
    fps x 10) or two (a 32-bit count, high word first)."""
    assert point.modbus is not None
    if point.type == BOOLEAN:
        return [bool(value)]
    if point.type == DOUBLE:
        return [max(0, min(0xFFFF, round(float(value) * 10)))]
    number = int(value)
    if point.modbus.count == 1:
        return [number & 0xFFFF]
    number &= 0xFFFFFFFF
    return [number >> 16, number & 0xFFFF]


def from_registers(point: Point, raw: list[int] | list[bool]) -> Any:
    """What a PLC makes of a point's bits or registers (the inverse of :func:`registers`):
    a count seen of 65535 is -1 (unknown)."""
    if point.type == BOOLEAN:
        return bool(raw[0])
    if point.type == DOUBLE:
        return int(raw[0]) / 10
    if len(raw) == 1:
        value = int(raw[0])
        return value - 0x10000 if point.type == INT32 and value >= 0x8000 else value
    return (int(raw[0]) << 16) | int(raw[1])
