"""The history: every event of every run, kept in an SQLite file for reports and restarts.

Why: counts that live in memory end with the process, so a restart mid-shift
lost the shift's totals, and nothing answered "how many rejects per hour this
week". Each event is queued here by the output thread and written by a thread
of its own (:mod:`coral_mfg.outputs.history_db` has the file and its schema),
in batches, so a slow disk never holds up inspection.

Nothing is lost quietly. A full queue drops (counted); a write that fails (a
full or read-only disk) keeps its events waiting, up to :data:`MAX_WAITING`,
and is tried again every few seconds once the disk has room, like the other
outputs; what cannot wait is counted lost. At the end ``received`` equals
``written + dropped + lost``, and ``written`` is what the file holds of the run.

At start the totals of the current shift (or day) are read back from the file,
and events add to them as they come: :meth:`HistoryWriter.totals`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_mfg.core.clock import POLL_S
from coral_mfg.core.errors import UserError
from coral_mfg.core.events import Event, event_json
from coral_mfg.core.files import make_folder
from coral_mfg.core.results import FrameResult
from coral_mfg.core.shifts import Period, shift_of
from coral_mfg.core.tally import EventKey, PeriodTotals, key_of
from coral_mfg.outputs.base import SinkBase
from coral_mfg.outputs.health import RESUME_FREE_BYTES, RETRY_S, OutputHealth
from coral_mfg.outputs.history_db import (
    INSERT,
    Row,
    begin_run,
    counts_between,
    disk_problem,
    end_run,
    file_bytes,
    open_reader,
    open_writer,
    prune,
    row_of,
)
from coral_mfg.outputs.retention import free_bytes

log = logging.getLogger(__name__)

QUEUE_SIZE = 4096
#: Events are committed at most this many at once, and at least this often.
BATCH = 500
COMMIT_EVERY_S = 0.5
#: Events kept in memory while the file cannot be written; older ones are lost (counted).
MAX_WAITING = 20_000
#: Retention (age, then size) runs at start and this often.
RETAIN_EVERY_S = 60.0
CLOSE_S = 10.0


@dataclass(frozen=True)
class HistoryLimits:
    """Retention: events older than ``keep_days`` go, then the oldest until the file
    holds under ``max_bytes``."""

    keep_days: float
    max_bytes: int


class _Tally:
    """The current shift's counts: read back at start, then counted on; a new shift
    starts from zero (its events may come from any thread that reads the totals)."""

    def __init__(self, shifts: tuple[str, ...], period: Period, runs: int,
                 counts: tuple[tuple[EventKey, int], ...]) -> None:
        self._shifts = shifts
        self._lock = threading.Lock()
        self._period = period
        self._runs = runs
        self._counts: Counter[EventKey] = Counter(dict(counts))
        self._shown: PeriodTotals | None = None

    def _roll(self, wall: float) -> None:
        self._period = shift_of(wall, self._shifts)
        self._runs = 1
        self._counts.clear()
        self._shown = None
        log.info("history: shift %s begins; its totals start from 0", self._period.name)

    def add(self, key: EventKey, wall: float) -> None:
        with self._lock:
            if wall >= self._period.end:
                self._roll(wall)
            if self._period.holds(wall):
                self._counts[key] += 1
                self._shown = None

    def totals(self, now: float) -> PeriodTotals:
        with self._lock:
            if now >= self._period.end:
                self._roll(now)
            if self._shown is None:
                p = self._period
                self._shown = PeriodTotals(p.name, p.start, p.end, self._runs, tuple(
                    sorted(self._counts.items(), key=lambda kv: _order(kv[0]))))
            return self._shown


def _order(key: EventKey) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in key)


def _reason(exc: BaseException, path: Path) -> str:
    return f"{exc} ({path})"


class HistoryWriter(SinkBase):
    """Writes every event to the history; see the module's docstring."""

    def __init__(self, path: Path, station: str, shifts: tuple[str, ...],
                 limits: HistoryLimits) -> None:
        make_folder(path.parent, "history folder", "--history", takes="path")
        self.path = path
        self.station = station
        self.shifts = shifts
        self.limits = limits
        self.health = OutputHealth("history")
        self.received = 0
        self.deleted = 0
        self.started = time.time()
        self._queue: queue.Queue[Row] = queue.Queue(QUEUE_SIZE)
        self._waiting: list[Row] = []
        self._conn: sqlite3.Connection | None = None
        self._run: int | None = None
        self._retry_at = 0.0
        self._retain_at = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="history", daemon=True)
        try:
            self._conn = open_writer(path)
            self._run = begin_run(self._conn, station, self.started, shifts)
        except sqlite3.Error as exc:  # a disk problem: the run goes on, writing is retried
            self._drop_connection()
            self._failed(exc)
        self._tally = self._read_back()

    def _read_back(self) -> _Tally:
        """The current shift's totals so far, from the runs before this one."""
        period = shift_of(time.time(), self.shifts)
        runs = 0
        counts: tuple[tuple[EventKey, int], ...] = ()
        try:
            if self._conn is not None:
                runs, counts = counts_between(self._conn, period.start, period.end)
            elif self.path.is_file() and self.path.stat().st_size > 0:  # not one made empty
                with contextlib.closing(open_reader(self.path)) as reader:
                    runs, counts = counts_between(reader, period.start, period.end)
        except (sqlite3.Error, UserError) as exc:
            log.warning("history: the totals of shift %s so far cannot be read (%s); they "
                        "start from 0", period.name, exc)
        tally = _Tally(self.shifts, period, runs + 1, counts)
        shown = tally.totals(time.time())
        graded = ", ".join(f"{g} {n}" for g, n in shown.inspected().items()) or "none"
        log.info("history: %s; shift %s so far, from %d earlier run(s): %d events, graded %s, "
                 "keep-out entries %d", self.path, period.name, runs,
                 sum(n for _, n in counts), graded, shown.total("keepout_enter"))
        return tally

    # --- the output thread's side ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def write(self, result: FrameResult) -> None:
        for event in result.events:
            self.event(event)

    def event(self, event: Event) -> None:
        self.record(event_json(event), event.stamp.wall)

    def record(self, record: dict[str, Any], wall: float) -> None:
        """One event's JSON form, stamped ``wall``: counted, and queued for the file."""
        self.received += 1
        self._tally.add(key_of(record), wall)
        if self._done.is_set():
            self.health.drop()
            return
        try:
            self._queue.put_nowait(row_of(record, wall))
        except queue.Full:
            self.health.drop()

    def totals(self) -> PeriodTotals:
        """The current shift's totals over every run (see the module's docstring)."""
        return self._tally.totals(time.time())

    # --- the writer thread -----------------------------------------------------------------

    def _loop(self) -> None:
        committed = time.monotonic()
        while True:
            self._take()
            closing = self._done.is_set() and self._queue.empty()
            now = time.monotonic()
            ready = closing or len(self._waiting) >= BATCH or now - committed >= COMMIT_EVERY_S
            # with no run row yet (the file failed at start), an attempt proves it writable
            if ready and (self._waiting or self._run is None):
                if closing or self._retry_due():
                    self._flush(last=closing)
                self._bound_waiting()
                committed = now
            if now >= self._retain_at and self.health.error is None:
                self._retain()
            if closing:
                return

    def _take(self) -> None:
        """What is queued, into the waiting list (the wait is short: see POLL_S)."""
        with contextlib.suppress(queue.Empty):
            self._waiting.append(self._queue.get(timeout=POLL_S))
            for _ in range(QUEUE_SIZE):
                self._waiting.append(self._queue.get_nowait())

    def _retry_due(self) -> bool:
        """Healthy: always. Failing: every :data:`RETRY_S`, once the disk has room."""
        if self.health.error is None:
            return True
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + RETRY_S
        try:
            return free_bytes(self.path.parent) >= RESUME_FREE_BYTES
        except OSError:
            return True

    def _flush(self, *, last: bool) -> None:
        """Commit what is waiting, in batches; on failure keep it for the next try (the
        last try, at close, counts it lost)."""
        while True:
            batch = self._waiting[:BATCH]
            try:
                self._commit(batch)
            except (sqlite3.Error, UserError) as exc:
                self._drop_connection()
                self._failed(exc)
                if last and self._waiting:
                    self.health.failed(self.health.error or str(exc), lost=len(self._waiting))
                    self._waiting.clear()
                return
            del self._waiting[:len(batch)]
            self.health.wrote(len(batch))
            if not self._waiting:
                return

    def _commit(self, rows: list[Row]) -> None:
        if self._conn is None:
            self._conn = open_writer(self.path)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            run = self._run
            if run is None:
                run = begin_run(conn, self.station, self.started, self.shifts)
            conn.executemany(INSERT, [(run, *row) for row in rows])
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._run = run

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + RETRY_S
        self.health.failed(_reason(exc, self.path), lost=0)

    def _bound_waiting(self) -> None:
        excess = len(self._waiting) - MAX_WAITING
        if excess > 0:
            del self._waiting[:excess]
            self.health.failed(self.health.error or "the history fell behind", lost=excess)

    def _drop_connection(self) -> None:
        """Closed after a failure: the next try opens the file again (a disk remounted
        read-write, a file made writable, is only seen by a new connection)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _retain(self) -> None:
        self._retain_at = time.monotonic() + RETAIN_EVERY_S
        if self._conn is None:
            return
        try:
            deleted = prune(self._conn, before=time.time() - self.limits.keep_days * 86400,
                            max_bytes=self.limits.max_bytes)
        except sqlite3.Error as exc:
            log.warning("history: old events not deleted (%s); tried again in %.0f s",
                        _reason(exc, self.path), RETAIN_EVERY_S)
            if disk_problem(exc):
                self._drop_connection()
            return
        if deleted:
            self.deleted += deleted
            log.info("history: %d old event(s) deleted (retention: %g days, %.0f MB)",
                     deleted, self.limits.keep_days, self.limits.max_bytes / 2**20)

    # --- the end ---------------------------------------------------------------------------

    def close(self, timeout: float = CLOSE_S) -> None:
        """Write what is queued (within ``timeout``), mark the run ended, close the file;
        what could not be written is counted."""
        self._done.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("history: the writer did not finish in %.0f s; what it has not "
                            "committed is counted dropped", timeout)
                self.health.drop(self._queue.qsize() + len(self._waiting))
                return
        left = self._queue.qsize()
        if left:
            self.health.drop(left)
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._run is not None:
                end_run(conn, self._run, time.time())
        except sqlite3.Error as exc:
            log.warning("history: the run's end not written (%s)", _reason(exc, self.path))
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()  # the last connection checkpoints the WAL into the file

    def counts(self) -> dict[str, Any]:
        return {"received": self.received, **self.health.counts(),
                "waiting": self._queue.qsize() + len(self._waiting), "deleted": self.deleted,
                "megabytes": round(file_bytes(self.path) / 2**20, 2)}
