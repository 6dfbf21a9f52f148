"""What every event carries, whichever output it goes to: when, which one, and where.

An event is stamped once, before it is queued, so the event log, the MQTT
messages and the web view name it by the same id.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any


def iso_utc(wall: float) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-11-24T11:30:05.250Z``."""
    when = dt.datetime.fromtimestamp(wall, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def stamp(record: dict[str, Any], wall: float, station: str) -> dict[str, Any]:
    """Give an event its wall-clock time, a unique id and the station, in place."""
    record["timestamp"] = iso_utc(wall)
    record["id"] = uuid.uuid4().hex
    record["station"] = station
    return record
