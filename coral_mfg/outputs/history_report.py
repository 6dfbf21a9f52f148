"""Counts from the history, per hour, shift or day: what ``coral-mfg report`` prints and
``/api/history`` serves, made here once for both.

Periods are local time (of the machine that asks; run the report with ``TZ``
set to the station's when they differ), cut by SQLite itself so only the
counts leave the file, never the rows. The web view asks within limits
(:func:`web_query`): a bounded time range, a bounded number of rows, a deadline.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_mfg.core.clock import iso_utc
from coral_mfg.core.shifts import WHOLE_DAY, shift_of
from coral_mfg.core.tally import EventKey
from coral_mfg.outputs.history_db import KEY_COLUMNS, key_from_columns, stored_shifts

BY = ("hour", "shift", "day")
FORMATS = ("table", "csv", "json")
#: The web view's bounds: the longest range per period, its default, and the rows.
WEB_SPAN_DAYS = {"hour": 31, "shift": 93, "day": 400}
WEB_DEFAULT_DAYS = {"hour": 1, "shift": 7, "day": 31}
WEB_MAX_ROWS = 5000
WEB_DEADLINE_S = 5.0
WEB_PARAMS = frozenset({"by", "since", "until", "type", "camera", "format"})
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
WHEN = "a time like 2026-11-24, 2026-11-24T06:00, 2026-11-24T05:00Z, 12h, 7d, today or shift"
#: The report's columns: the period, the event's key (``check`` for ``check_name``), the count.
COLUMNS = ("period", "camera", "type", "zone", "line", "direction", "check", "label", "grade",
           "passed", "count")


def parse_when(text: str, now: float, shifts: tuple[str, ...] = ()) -> float:
    """A moment as a person writes it (see :data:`WHEN`): an ISO date or time (local
    unless it has an offset or ``Z``), a span ago, the start of today or of the shift."""
    value = text.strip()
    if value == "today":
        return shift_of(now, WHOLE_DAY).start
    if value == "shift":
        return shift_of(now, shifts).start
    ago = _AGO.match(value)
    if ago:
        return now - float(ago.group(1)) * _UNIT_S[ago.group(2)]
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(WHEN) from None
    return when.timestamp()  # a naive time is local


@dataclass(frozen=True)
class Query:
    """What to count: periods of ``by``, from ``since`` to ``until`` (None: open), of
    these types and cameras (empty: all)."""

    by: str = "day"
    since: float | None = None
    until: float | None = None
    types: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()
    shifts: tuple[str, ...] | None = None  # None: the ones the station last kept


@dataclass(frozen=True)
class ReportRow:
    period: str
    key: EventKey
    count: int


@dataclass(frozen=True)
class Report:
    """The counts, and what they cover: the runs and the first and last event counted."""

    query: Query
    shifts: tuple[str, ...]
    runs: int
    first: float | None
    last: float | None
    rows: tuple[ReportRow, ...]
    truncated: bool


def _period_sql(by: str, shifts: tuple[str, ...]) -> tuple[str, list[Any]]:
    local = "wall, 'unixepoch', 'localtime'"
    if by == "hour":
        return f"strftime('%Y-%m-%d %H:00', {local})", []
    if by == "day":
        return f"date({local})", []
    starts = shifts or WHOLE_DAY  # as core.shifts.shift_of cuts it, latest start first
    cases = " ".join(f"WHEN strftime('%H:%M', {local}) >= ? THEN date({local}) || ' ' || ?"
                     for _ in starts)
    params: list[Any] = [p for s in reversed(starts) for p in (s, s)]
    return (f"CASE {cases} ELSE date({local}, '-1 day') || ' ' || ? END",
            [*params, starts[-1]])


def _where(query: Query) -> tuple[str, list[Any]]:
    clauses = ["wall >= ?", "wall < ?"]
    params: list[Any] = [
        query.since if query.since is not None else float("-inf"),
        query.until if query.until is not None else float("inf")]
    for column, values in (("type", query.types), ("camera", query.cameras)):
        if values:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params += values
    return " AND ".join(clauses), params


@contextlib.contextmanager
def _deadline(conn: sqlite3.Connection, seconds: float | None, doing: str) -> Iterator[None]:
    """Queries in the block interrupted past ``seconds`` (:class:`TimeoutError` saying
    what was ``doing``); None: no deadline."""
    if seconds is not None:
        deadline = time.monotonic() + seconds
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        yield
    except sqlite3.OperationalError as exc:
        if seconds is not None and "interrupt" in str(exc):
            raise TimeoutError(f"{doing} took over {seconds:g} s") from None
        raise
    finally:
        conn.set_progress_handler(None, 0)


def report(conn: sqlite3.Connection, query: Query, *, max_rows: int | None = None,
           deadline_s: float | None = None) -> Report:
    """Count events per period and key. ``deadline_s`` interrupts a query that takes
    longer (:class:`TimeoutError`); ``max_rows`` cuts the rows (``truncated``)."""
    shifts = query.shifts if query.shifts is not None else stored_shifts(conn)
    period, period_params = _period_sql(query.by, shifts)
    where, params = _where(query)
    columns = ", ".join(KEY_COLUMNS)
    limit = -1 if max_rows is None else max_rows + 1
    with _deadline(conn, deadline_s, "counting"):
        rows = conn.execute(
            f"SELECT {period} AS period, {columns}, count(*) FROM events WHERE {where} "
            f"GROUP BY period, {columns} ORDER BY period, camera, {columns} LIMIT ?",
            [*period_params, *params, limit]).fetchall()
        runs, first, last = conn.execute(
            f"SELECT count(DISTINCT run), min(wall), max(wall) FROM events WHERE {where}",
            params).fetchone()
    truncated = max_rows is not None and len(rows) > max_rows
    made = tuple(ReportRow(r[0], key_from_columns(r[1:-1]), int(r[-1]))
                 for r in rows[:max_rows] if r[0] is not None)
    return Report(query, shifts, int(runs), first, last, made, truncated)


# --- the web view's questions ------------------------------------------------------------


def web_query(params: Mapping[str, str], now: float, shifts: tuple[str, ...]) -> Query:
    """``/api/history``'s parameters as a query, within the web view's bounds, or
    :class:`ValueError` saying, in one line, which one is wrong and why."""
    unknown = sorted(set(params) - WEB_PARAMS)
    if unknown:
        raise ValueError(f"unknown parameter '{unknown[0][:40]}' (known: "
                         f"{', '.join(sorted(WEB_PARAMS))})")
    for name, value in params.items():
        if len(value) > 200 or not value.isprintable():
            raise ValueError(f"{name}: at most 200 printable characters")
    by = params.get("by", "hour")
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}")
    form = params.get("format", "json")
    if form not in ("json", "csv"):
        raise ValueError("format must be json or csv")
    until = _when(params, "until", now, shifts) if "until" in params else now
    since = (_when(params, "since", now, shifts) if "since" in params
             else until - WEB_DEFAULT_DAYS[by] * 86400)
    if since >= until:
        raise ValueError("since must be before until")
    if until - since > WEB_SPAN_DAYS[by] * 86400:
        raise ValueError(f"by {by}, at most {WEB_SPAN_DAYS[by]} days at once: ask for a "
                         "later since, or a longer period")
    return Query(by, since, until, _names(params.get("type", "")),
                 _names(params.get("camera", "")), shifts)


def _when(params: Mapping[str, str], name: str, now: float, shifts: tuple[str, ...]) -> float:
    try:
        return parse_when(params[name], now, shifts)
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"{name} must be {WHEN}") from None


def _names(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if len(names) > 32:
        raise ValueError("at most 32 names in type or camera")
    return names


# --- the forms it is given in ------------------------------------------------------------


def _cells(row: ReportRow) -> dict[str, Any]:
    key = row.key.record()
    return {"period": row.period, **{c: key[c] for c in COLUMNS[1:-1]}, "count": row.count}


def as_json(r: Report) -> dict[str, Any]:
    """The report as ``--format json`` and ``/api/history`` give it."""
    q = r.query
    return {"by": q.by, "since": None if q.since is None else iso_utc(q.since),
            "until": None if q.until is None else iso_utc(q.until), "shifts": list(r.shifts),
            "runs": r.runs, "first": None if r.first is None else iso_utc(r.first),
            "last": None if r.last is None else iso_utc(r.last),
            "rows": [_cells(row) for row in r.rows], "truncated": r.truncated}


def as_csv(r: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in r.rows:
        cells = _cells(row)
        writer.writerow(["" if cells[c] is None else _shown(cells[c]) for c in COLUMNS])
    return out.getvalue()


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def as_table(r: Report, source: Path | None = None) -> str:
    """Aligned columns, only those that hold something, and a total per key when the
    report spans more than one period."""
    q = r.query
    span = ("no events" if r.first is None or r.last is None else
            f"{_local(r.first)} to {_local(r.last)} (local time)")
    shifts = f", shifts {', '.join(r.shifts)}" if q.by == "shift" else ""
    lines = [f"{source or 'history'}: {r.runs} run(s), {span}; by {q.by}{shifts}"]
    rows = [_cells(row) for row in r.rows]
    periods = {row.period for row in r.rows}
    if len(periods) > 1:
        totals: dict[EventKey, int] = {}
        for row in r.rows:
            totals[row.key] = totals.get(row.key, 0) + row.count
        rows += [_cells(ReportRow("total", k, n)) for k, n in sorted(
            totals.items(), key=lambda kv: _order(kv[0]))]
    if not rows:
        return lines[0] + "\n"
    shown = [c for c in COLUMNS if c in ("period", "type", "count")
             or any(row[c] is not None for row in rows)]
    table = [[("event" if c == "type" else c) for c in shown]] + [
        ["" if row[c] is None else _shown(row[c]) for c in shown] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(shown))]
    for line in table:
        cells = [cell.rjust(w) if shown[i] == "count" else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(line, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    if r.truncated:
        lines.append("(more rows than shown: ask for a shorter range)")
    return "\n".join(lines) + "\n"


def _order(key: EventKey) -> tuple[str, ...]:
    """The rows' order: camera, then type, then the keys (None first)."""
    return tuple("" if v is None else str(v) for v in (key.camera, *key))


def _local(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall).strftime("%Y-%m-%d %H:%M:%S")


def as_text(r: Report, form: str, source: Path | None = None) -> str:
    """The report in ``form`` (one of :data:`FORMATS`)."""
    if form == "json":
        return json.dumps(as_json(r), indent=1) + "\n"
    if form == "csv":
        return as_csv(r)
    return as_table(r, source)


# --- the snapshots the history knows of ------------------------------------------------

#: At most this many snapshots per answer (the gallery pages by ``until``).
SNAPSHOT_LIMIT = 200
SNAPSHOT_FILTERS = ("camera", "zone", "grade", "type")


def snapshot_events(conn: sqlite3.Connection, filters: Mapping[str, str], since: float,
                    until: float, *, limit: int = SNAPSHOT_LIMIT,
                    deadline_s: float | None = None) -> list[dict[str, Any]]:
    """The newest events with a snapshot between ``since`` and ``until``, matching every
    filter given (``camera``, ``zone``, ``grade``, ``type``): the gallery's pictures
    with what they show. Only the events' own JSON leaves the file."""
    unknown = set(filters) - set(SNAPSHOT_FILTERS)
    if unknown:
        raise ValueError(f"unknown filter '{sorted(unknown)[0]}'")
    clauses = ["wall >= ?", "wall < ?", "json_extract(json, '$.snapshot') IS NOT NULL"]
    params: list[Any] = [since, until]
    for column, value in filters.items():
        clauses.append(f"{column} = ?")
        params.append(value)
    with _deadline(conn, deadline_s, "searching"):
        rows = conn.execute(f"SELECT json FROM events WHERE {' AND '.join(clauses)} "
                            "ORDER BY wall DESC LIMIT ?", [*params, max(1, limit)]).fetchall()
    out = []
    for (text,) in rows:
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
