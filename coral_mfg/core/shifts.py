"""Shifts: the start times a plant works to, and the shift (or day) a moment falls in.

A plant says "the morning shift", not "06:00 to 14:00 UTC": shifts are local
times of day, and a shift is named by its local start (``2026-11-24 22:00``
runs into the next morning). With no shifts set, a day from 00:00 is the one
shift. The station, ``coral-mfg report`` and ``/api/history`` all cut time
here (the report's SQL cuts it the same way, with the same starts).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

_HH_MM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
#: The one shift of a station that sets none.
WHOLE_DAY = ("00:00",)


def shift_times(value: Any) -> tuple[str, ...]:
    """Times of day as ``HH:MM`` (a list, or one comma-separated string as a flag gives
    them), in order, each once; empty means one shift a day from 00:00."""
    items = value.split(",") if isinstance(value, str) else value
    said = 'times of day as "HH:MM", such as ["06:00", "14:00", "22:00"]'
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(said)
    out = set()
    for item in (i.strip() for i in items if i.strip()):
        match = _HH_MM.match(item)
        if match is None:
            raise ValueError(f"{said} ('{item}' is not one)")
        out.add(f"{int(match.group(1)):02d}:{match.group(2)}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class Period:
    """One shift (or day): its name and its bounds on the wall clock, end excluded."""

    name: str
    start: float
    end: float

    def holds(self, wall: float) -> bool:
        return self.start <= wall < self.end


def _at(day: dt.date, start: str) -> float:
    """``start`` on local ``day`` as a wall-clock time (a naive datetime is local)."""
    hours, minutes = (int(p) for p in start.split(":"))
    return dt.datetime.combine(day, dt.time(hours, minutes)).timestamp()


def shift_of(wall: float, starts: tuple[str, ...] = ()) -> Period:
    """The shift that ``wall`` falls in (a day from 00:00 without ``starts``)."""
    starts = starts or WHOLE_DAY
    today = dt.datetime.fromtimestamp(wall).date()
    moments = sorted((_at(day, s), day, s) for day in
                     (today - dt.timedelta(days=1), today, today + dt.timedelta(days=1))
                     for s in starts)
    begun = [m for m in moments if m[0] <= wall]
    start, day, name = begun[-1]
    end = next(m[0] for m in moments if m[0] > wall)
    return Period(f"{day.isoformat()} {name}", start, end)
