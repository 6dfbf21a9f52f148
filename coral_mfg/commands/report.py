"""``coral-mfg report``: the history's counts per hour, shift or day, over every run.

It only reads the file (read-only, beside a station that may be writing it),
so it is safe to run at any time, on the station or on a copy of the file.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from coral_mfg.config.flags import Parser
from coral_mfg.core.errors import UserError
from coral_mfg.core.shifts import shift_times
from coral_mfg.outputs.history_db import open_reader, stored_shifts
from coral_mfg.outputs.history_report import BY, FORMATS, WHEN, Query, as_text, parse_when, report


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="coral-mfg report",
        description="Count the events in a station's history per hour, shift or day: per "
        "camera, event type, zone, line, direction, presence check, label and grade, summed "
        "over every run. Periods are local time.",
    )
    p.add_argument("--history", required=True, metavar="FILE.sqlite",
                   help="the history the station keeps (--history; by default "
                        "history.sqlite beside its event log)")
    p.add_argument("--by", choices=BY, default="day", help="the period counted (default day)")
    p.add_argument("--since", metavar="WHEN", help=f"from: {WHEN} (default: the first event)")
    p.add_argument("--until", metavar="WHEN", help="to, excluded (default: the last event)")
    p.add_argument("--format", choices=FORMATS, default="table", help="(default table)")
    p.add_argument("--type", metavar="TYPE[,TYPE]", default="",
                   help="only these event types (graded, keepout_enter, line_crossed, ...)")
    p.add_argument("--camera", metavar="NAME[,NAME]", default="", help="only these cameras")
    p.add_argument("--shifts", metavar="HH:MM[,HH:MM]",
                   help="shift starts for --by shift (default: those the station keeps)")
    return p


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    shifts = None
    if args.shifts is not None:
        try:
            shifts = shift_times(args.shifts)
        except ValueError as exc:
            raise UserError(f"--shifts {args.shifts!r}: must be {exc}") from None
    now = time.time()
    path = Path(args.history).expanduser()
    with contextlib.closing(open_reader(path)) as conn:
        starts = shifts if shifts is not None else stored_shifts(conn)
        since = _when("--since", args.since, now, starts)
        until = _when("--until", args.until, now, starts)
        if since is not None and until is not None and since >= until:
            raise UserError(f"--since {args.since} is not before --until {args.until}"
                            ": pass an earlier --since")
        query = Query(args.by, since, until, _names(args.type), _names(args.camera), shifts)
        made = report(conn, query)
    sys.stdout.write(as_text(made, args.format, path))
    return 0


def _when(flag: str, text: str | None, now: float, shifts: tuple[str, ...]) -> float | None:
    if text is None:
        return None
    try:
        return parse_when(text, now, shifts)
    except (ValueError, OverflowError, OSError):
        raise UserError(f"{flag} {text!r}: must be {WHEN}") from None
