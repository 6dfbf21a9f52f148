"""The history database: one SQLite file, its schema, and the few statements that write it.

Why SQLite: it is in Python's standard library, one file a person can copy,
and in WAL mode a writer never blocks the readers (``coral-mfg report``,
``/api/history``) nor they it. Each event is a row: when (``wall``, seconds
since the epoch, UTC), which run wrote it, its type and camera, the keys it
is counted by (:mod:`coral_mfg.core.tally`) in columns of their own, and its
whole JSON form, so a kind of event added later is stored, and counted by
its keys, without a change here. One index, on the time and then the keys,
serves every count over a time range without reading the JSON.

The writer (:mod:`coral_mfg.outputs.history`) commits in batches; a crash or a
power cut loses at most the batch not yet committed, never the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from coral_mfg import __version__
from coral_mfg.core.errors import UserError
from coral_mfg.core.tally import EventKey, key_of

log = logging.getLogger(__name__)

APP = "coral_mfg"
SCHEMA = 1
#: How long a statement waits for another connection's write lock (another station
#: writing the same file, a report checkpointing) before it fails.
BUSY_S = 2.0
#: The WAL file is cut back to this after each checkpoint.
WAL_LIMIT_BYTES = 4 << 20
#: The event keys, in their column order (``check`` is a word of SQL: its column is
#: ``check_name``).
KEY_COLUMNS = ("type", "camera", "zone", "line", "direction", "check_name", "label", "grade",
               "passed")

_TABLES = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    station TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    version TEXT NOT NULL,
    shifts TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    wall REAL NOT NULL,
    type TEXT NOT NULL,
    camera TEXT,
    zone TEXT,
    line TEXT,
    direction TEXT,
    check_name TEXT,
    label TEXT,
    grade TEXT,
    passed INTEGER,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (wall, {", ".join(KEY_COLUMNS)});
"""

#: Row of the events table, in the order of :data:`INSERT`, without the run.
Row = tuple[float, str, str | None, str | None, str | None, str | None, str | None,
            str | None, str | None, int | None, str]
INSERT = (f"INSERT INTO events (run, wall, {', '.join(KEY_COLUMNS)}, json) "
          f"VALUES ({', '.join('?' * (len(KEY_COLUMNS) + 3))})")


def row_of(record: Mapping[str, Any], wall: float) -> Row:
    """An event's JSON form as a row: its keys in their columns, the JSON whole."""
    k = key_of(record)
    return (wall, k.type, k.camera, k.zone, k.line, k.direction, k.check, k.label, k.grade,
            None if k.passed is None else int(k.passed),
            json.dumps(record, separators=(",", ":"), ensure_ascii=False))


def key_from_columns(values: Iterable[Any]) -> EventKey:
    """A row's key columns (in :data:`KEY_COLUMNS` order) as an event key."""
    kind, camera, zone, line, direction, check, label, grade, passed = values
    return EventKey(kind, camera, zone, line, direction, check, label, grade,
                    None if passed is None else bool(passed))


# --- opening ---------------------------------------------------------------------------------


def disk_problem(exc: sqlite3.Error) -> bool:
    """An error of the disk or the file system (full, read-only, I/O, locked): the
    writer reports it and tries again later. Anything else says the file is not a
    history (or is damaged): a person must look."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN",
                            "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_PERM", "SQLITE_NOMEM"))


def not_a_history(path: Path, why: str) -> UserError:
    return UserError(f"{path} is not a coral-mfg history ({why}): pass another file to "
                     "--history, or move this one aside")


def open_writer(path: Path) -> sqlite3.Connection:
    """The file opened for writing, made (with its schema) if new.

    Raises :class:`sqlite3.Error` for a disk problem (see :func:`disk_problem`), and
    :class:`UserError` for a file that is not a history.
    """
    conn = sqlite3.connect(path, timeout=BUSY_S, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect in a new file only
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL mode (journal mode {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL: consistent on power loss
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        _check(conn, path, create=True)
    except sqlite3.Error as exc:
        conn.close()
        if disk_problem(exc):
            raise
        raise not_a_history(path, str(exc)) from None
    except BaseException:
        conn.close()
        raise
    return conn


def open_reader(path: Path) -> sqlite3.Connection:
    """The file opened read-only (a report, the web view), or one line saying why not."""
    if not path.is_file():
        raise UserError(f"history {path} not found: pass the file the station keeps "
                        "(--history; by default history.sqlite beside its event log)")
    uri = path.resolve().as_uri()
    for mode in ("?mode=ro", "?immutable=1"):  # immutable: a WAL file on read-only media
        conn = sqlite3.connect(uri + mode, uri=True, timeout=BUSY_S, isolation_level=None,
                               check_same_thread=False)
        try:
            _check(conn, path, create=False)
            return conn
        except sqlite3.Error as exc:
            conn.close()
            if mode == "?mode=ro" and getattr(exc, "sqlite_errorname", "").startswith(
                    ("SQLITE_CANTOPEN", "SQLITE_READONLY")):
                continue
            if disk_problem(exc):
                raise UserError(f"history {path} cannot be read ({exc})") from None
            raise not_a_history(path, str(exc)) from None
        except BaseException:
            conn.close()
            raise
    raise AssertionError("unreachable: the immutable open raises or returns")


def _check(conn: sqlite3.Connection, path: Path, *, create: bool) -> None:
    """The file is a history of a schema this version reads (made first when new)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables and create:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _TABLES.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('app', ?), ('schema', ?)",
                         (APP, str(SCHEMA)))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        log.info("history: made %s", path)
        return
    if not tables:
        raise not_a_history(path, "it is empty")
    if "meta" not in tables or "events" not in tables:
        raise not_a_history(path, "an SQLite file of other tables")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("app") != APP:
        raise not_a_history(path, "an SQLite file of another application")
    if int(meta.get("schema", "0")) > SCHEMA:
        raise UserError(f"history {path} was written by a newer coral-mfg (schema "
                        f"{meta.get('schema')}); read it with that version")


# --- writing ---------------------------------------------------------------------------------


def begin_run(conn: sqlite3.Connection, station: str, started: float,
              shifts: tuple[str, ...]) -> int:
    """A run's row (its events name it); the shifts it keeps become the file's default."""
    shown = json.dumps(list(shifts))
    cur = conn.execute("INSERT INTO runs (station, started, version, shifts) VALUES (?, ?, ?, ?)",
                       (station, started, __version__, shown))
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('shifts', ?)", (shown,))
    assert cur.lastrowid is not None
    return cur.lastrowid


def end_run(conn: sqlite3.Connection, run: int, ended: float) -> None:
    conn.execute("UPDATE runs SET ended = ? WHERE id = ?", (ended, run))


def stored_shifts(conn: sqlite3.Connection) -> tuple[str, ...]:
    """The shifts the station last kept (a report's default)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'shifts'").fetchone()
    try:
        value = json.loads(row[0]) if row else []
    except ValueError:
        return ()
    return tuple(str(s) for s in value) if isinstance(value, list) else ()


def counts_between(conn: sqlite3.Connection, start: float, end: float
                   ) -> tuple[int, tuple[tuple[EventKey, int], ...]]:
    """(runs, events by key) from ``start`` to ``end``: a shift's totals so far."""
    columns = ", ".join(KEY_COLUMNS)
    rows = conn.execute(f"SELECT {columns}, count(*) FROM events WHERE wall >= ? AND wall < ? "
                        f"GROUP BY {columns} ORDER BY {columns}", (start, end)).fetchall()
    runs = conn.execute("SELECT count(DISTINCT run) FROM events WHERE wall >= ? AND wall < ?",
                        (start, end)).fetchone()[0]
    return int(runs), tuple((key_from_columns(r[:-1]), int(r[-1])) for r in rows)


def used_bytes(conn: sqlite3.Connection) -> int:
    """What the events take in the file (free pages are not counted: they are reused)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def file_bytes(path: Path) -> int:
    """The file and its WAL, as they take the disk."""
    total = 0
    for p in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total


#: Deleting for space goes down to this share of the limit, so it is not done again at
#: the next look.
PRUNE_TO = 0.9


def prune(conn: sqlite3.Connection, *, before: float, max_bytes: int) -> int:
    """Delete events older than ``before``, then the oldest until the file holds under
    ``max_bytes``; the pages freed are given back to the disk. Returns the events deleted.
    """
    deleted = _delete(conn, "DELETE FROM events WHERE wall < ?", (before,))
    for _ in range(50):  # a bound: each pass deletes at least a share of the events
        used = used_bytes(conn)
        if used <= max_bytes:
            break
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        if count == 0:
            break
        share = (used - max_bytes * PRUNE_TO) / used
        n = max(100, int(count * share) + 1)
        deleted += _delete(conn, "DELETE FROM events WHERE id IN (SELECT id FROM events "
                                 "ORDER BY wall LIMIT ?)", (n,))
    if deleted:
        conn.execute("DELETE FROM runs WHERE ended IS NOT NULL AND ended < ? AND id NOT IN "
                     "(SELECT DISTINCT run FROM events)", (before,))
        # a statement that frees one page a step: executescript steps it to the end
        conn.executescript("PRAGMA incremental_vacuum;")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return deleted


def _delete(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        n = conn.execute(sql, params).rowcount
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return max(0, n)
