"""What an event is counted by, and a period's counts as the views show them.

The key is read from an event's JSON form by field name, never from its class,
so a kind of event added later (a line crossing, a presence check) is counted
by its zone, line, direction, check, label and grade as soon as it carries
them. The history stores these keys in columns of their own; the station's
shift totals and the report group by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from coral_mfg.core.clock import iso_utc
from coral_mfg.core.names import display_name

#: The JSON fields an event is counted by, besides its type and its camera (``stream``).
KEY_FIELDS = ("zone", "line", "direction", "check", "label", "grade", "passed")


class EventKey(NamedTuple):
    """An event's type, camera and keys (None where it has none)."""

    type: str
    camera: str | None = None
    zone: str | None = None
    line: str | None = None
    direction: str | None = None
    check: str | None = None
    label: str | None = None
    grade: str | None = None
    passed: bool | None = None

    def record(self) -> dict[str, Any]:
        """The key as the report's JSON and ``/api/status`` give it."""
        return self._asdict()


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return value if isinstance(value, str) else str(value)


def key_of(record: Mapping[str, Any]) -> EventKey:
    """The key of an event's JSON form (see the module's docstring)."""
    passed = record.get("passed")
    return EventKey(
        type=str(record.get("type", "")), camera=_text(record.get("stream")),
        zone=_text(record.get("zone")), line=_text(record.get("line")),
        direction=_text(record.get("direction")), check=_text(record.get("check")),
        label=_text(record.get("label")), grade=_text(record.get("grade")),
        passed=passed if isinstance(passed, bool) else None)


@dataclass(frozen=True)
class PeriodTotals:
    """The station's counts over one shift, from every run of it (this one included),
    read back from the history at start and counted on since.

    ``runs`` is how many runs wrote events in it; ``counts`` the events by key.
    """

    name: str  # "2026-11-24 14:00": the shift's local start
    start: float
    end: float
    runs: int
    counts: tuple[tuple[EventKey, int], ...]

    def total(self, kind: str, camera: str | None = None, **keys: Any) -> int:
        """Events of ``kind`` (of ``camera``, with these key values, when given)."""
        return sum(n for k, n in self.counts if k.type == kind
                   and camera in (None, k.camera)
                   and all(getattr(k, f) == v for f, v in keys.items()))

    def inspected(self, camera: str | None = None) -> dict[str, int]:
        """Graded objects by grade, as the run's own counts are given."""
        out: dict[str, int] = {}
        for k, n in self.counts:
            if k.type == "graded" and k.grade is not None and camera in (None, k.camera):
                out[k.grade] = out.get(k.grade, 0) + n
        return dict(sorted(out.items()))

    def line(self, camera: str) -> str:
        """What the screen says of ``camera``'s shift, or "" when nothing was counted:
        grades, keep-out entries, and line crossings by line and direction."""
        parts = [f"{display_name(grade)} {n}" for grade, n in self.inspected(camera).items()]
        entries = self.total("keepout_enter", camera)
        if entries:
            parts.append(f"entries {entries}")
        crossed: dict[str, int] = {}
        for k, n in self.counts:
            if k.type == "line_crossed" and k.camera == camera:
                name = " ".join(p for p in (k.line, k.direction) if p)
                crossed[name] = crossed.get(name, 0) + n
        parts += [f"{name} {n}" for name, n in sorted(crossed.items())]
        if not parts:
            return ""
        return f"shift {self.name[-5:]}: " + "   ".join(parts)

    def record(self) -> dict[str, Any]:
        """The shift as ``/api/status`` gives it."""
        return {"name": self.name, "start": iso_utc(self.start), "end": iso_utc(self.end),
                "runs": self.runs, "counts": self.inspected(),
                "violations": self.total("keepout_enter"),
                "events": [{**k.record(), "count": n} for k, n in self.counts]}
