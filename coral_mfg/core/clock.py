"""Time, written one way: UTC ISO 8601 with ``Z`` in events and in file names; local time
only where a person reads it, on screen and in the recording.

Also the one polling interval of threads that wait on a stop event.
"""

from __future__ import annotations

import datetime as dt
import time

#: How often a thread that waits for work also looks at its stop event.
POLL_S = 0.1


def iso_utc(wall: float) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-11-24T11:30:05.250Z``."""
    when = dt.datetime.fromtimestamp(wall, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def file_utc(wall: float, *, millis: bool = False) -> str:
    """The same instant for a file name, ISO 8601's basic form (no colons):
    ``20261124T113005Z``, or ``20261124T113005.250Z``."""
    when = dt.datetime.fromtimestamp(wall, dt.UTC)
    fraction = f".{when.microsecond // 1000:03d}" if millis else ""
    return when.strftime("%Y%m%dT%H%M%S") + fraction + "Z"


def local_caption(wall: float) -> str:
    """Local time with its offset, for people: ``2026-11-24 11:30:05.250 +01:00``."""
    when = dt.datetime.fromtimestamp(wall).astimezone()
    offset = when.strftime("%z")
    return (f"{when:%Y-%m-%d %H:%M:%S}.{when.microsecond // 1000:03d} "
            f"{offset[:3]}:{offset[3:]}")


#: When this process began (monotonic): uptimes are counted from it, never from the
#: wall clock, which may be set back or forward.
PROCESS_START = time.monotonic()
