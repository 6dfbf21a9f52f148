"""The history: every event in an SQLite file that outlives the run. Real runs of the
application on the sample videos write it; ``coral-mfg report`` and ``/api/history``
read it; a full disk is a real small tmpfs, a read-only file a really immutable one."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coral_mfg.core.shifts import shift_of, shift_times
from coral_mfg.core.tally import EventKey
from coral_mfg.outputs import history_db as db
from coral_mfg.outputs.history import HistoryLimits, HistoryWriter
from coral_mfg.outputs.history_report import Query, as_table, report, web_query
from tests.conftest import ROOT, jsonl, wait_for
from tests.test_web import App, get

APP = [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu"]
ZONE_CSV = "x,y\n150,400\n400,400\n400,480\n150,480\n"  # the worker sample walks into it
#: Kinds of the event log's lines that are not events.
NOT_EVENTS = ("frame", "summary")



def _events(path: Path) -> list[dict[str, Any]]:
    return [e for e in jsonl(path) if e["type"] not in NOT_EVENTS]


def _counted(events: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    return Counter((e["type"], e.get("stream"), e.get("zone"), e.get("grade")) for e in events)


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coral_mfg", "report", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def _summed(rows: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    for r in rows:
        out[(r["type"], r["camera"], r["zone"], r["grade"])] += r["count"]
    return out


def _zone(tmp: Path) -> Path:
    zone = tmp / "zone.csv"
    zone.write_text(ZONE_CSV)
    return zone


def _run(tmp: Path, events: Path, *args: str, frames: int = 70
         ) -> subprocess.CompletedProcess[str]:
    """One finite run on the samples (every frame, in order: the same events each time)."""
    return subprocess.run(
        [*APP, "--no-realtime", "--max_frames", str(frames), "--events", str(events),
         "--keepout_points_path", str(_zone(tmp)), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def _rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro",
                                            uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


# --- two runs, one history ---------------------------------------------------------------------


def test_two_runs_into_one_history_report_the_sum(tmp_path: Path) -> None:
    """The default file sits beside the event log; the second run reads the shift's totals
    back; the report counts both runs' events, each once, in every format."""
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    one = _run(tmp_path, first)
    assert one.returncode == 0, one.stderr
    two = _run(tmp_path, second)
    assert two.returncode == 0, two.stderr
    history = tmp_path / "history.sqlite"
    assert history.is_file()
    made = _events(first) + _events(second)
    kinds = {e["type"] for e in made}
    assert {"graded", "keepout_enter"} <= kinds, kinds
    for log in (first, second):  # each run wrote every event it logged, nothing else
        counts = jsonl(log)[-1]["outputs"]["history"]
        assert counts["written"] == counts["received"] == len(_events(log))
        assert counts["dropped"] == counts["lost"] == 0 and counts["error"] is None
    graded = sum(1 for e in _events(first) if e["type"] == "graded")
    assert f"from 1 earlier run(s): {len(_events(first))} events" in two.stderr
    assert "graded fresh_apple" in two.stderr and graded > 0

    out = _report("--history", str(history), "--by", "hour", "--format", "json")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["runs"] == 2 and not answer["truncated"]
    assert _summed(answer["rows"]) == _counted(made)
    ended = _rows(history, "SELECT count(*) FROM runs WHERE ended IS NOT NULL")[0][0]
    assert ended == 2

    table = _report("--history", str(history), "--by", "day")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "2 run(s)" in lines[0]
    header = lines[1].split()
    assert header[:3] == ["period", "camera", "event"] and header[-1] == "count"
    body = [line.split() for line in lines[2:]]
    for (kind, camera, zone, grade), n in _counted(made).items():
        assert any(row[-1] == str(n) and kind in row and camera in row
                   and (zone is None or zone in row) and (grade is None or grade in row)
                   for row in body), (kind, camera, zone, grade, table.stdout)

    csv = _report("--history", str(history), "--by", "shift", "--format", "csv",
                  "--type", "graded")
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout.splitlines()[0] == ("period,camera,type,zone,line,direction,check,"
                                          "label,grade,passed,count")
    assert sum(int(line.rsplit(",", 1)[1]) for line in csv.stdout.splitlines()[1:]) == sum(
        1 for e in made if e["type"] == "graded")


def test_no_history_and_an_explicit_file(tmp_path: Path) -> None:
    off = _run(tmp_path, tmp_path / "a.jsonl", "--no-history", frames=5)
    assert off.returncode == 0, off.stderr
    assert not (tmp_path / "history.sqlite").exists()
    assert "history" not in jsonl(tmp_path / "a.jsonl")[-1]["outputs"]
    elsewhere = tmp_path / "deep" / "h.sqlite"
    on = _run(tmp_path, tmp_path / "b.jsonl", "--history", str(elsewhere), frames=5)
    assert on.returncode == 0, on.stderr
    assert elsewhere.is_file() and not (tmp_path / "history.sqlite").exists()


# --- shift totals across a restart -------------------------------------------------------------


def test_a_restart_mid_shift_keeps_the_shift_totals_on_the_status_and_the_api(
    tmp_path: Path,
) -> None:
    """A first run ends; the second, serving the web view, starts with the shift's totals
    and counts on; /api/history sums both; it is bounded, checked, read-only and behind
    the token."""
    started = dt.datetime.now() - dt.timedelta(hours=1)  # a shift that holds this test
    shift = f"{started:%H}:00"
    first = _run(tmp_path, tmp_path / "first.jsonl", "--shifts", shift)
    assert first.returncode == 0, first.stderr
    before = _events(tmp_path / "first.jsonl")
    graded = Counter(e["grade"] for e in before if e["type"] == "graded")
    entries = sum(1 for e in before if e["type"] == "keepout_enter")
    assert graded and entries

    token = {"Authorization": "Bearer t0ken-for-history"}
    app = App(tmp_path, "--shifts", shift, env={"CORAL_MFG_HTTP_TOKEN": "t0ken-for-history"})
    try:
        app.ready(token)
        shown = json.loads(get(app.base + "/api/status", token)[2])["shift"]
        assert shown["name"].endswith(shift) and shown["runs"] == 2
        assert all(shown["counts"].get(g, 0) >= n for g, n in graded.items())
        assert shown["violations"] >= entries

        def answered() -> dict[str, Any] | None:
            status, _, body = get(app.base + "/api/history?by=hour&since=1d", token)
            assert status == 200, body
            found = json.loads(body)
            return found if found["runs"] == 2 else None

        found = wait_for(answered, "the second run's first events in the history")
        summed = _summed(found["rows"])
        for (kind, camera, zone, grade), n in _counted(before).items():
            assert summed[(kind, camera, zone, grade)] >= n
        status, headers, body = get(app.base + "/api/history?by=shift&format=csv&type=graded",
                                    token)
        assert status == 200 and headers["Content-Type"].startswith("text/csv")
        assert body.decode().splitlines()[0].startswith("period,camera,type,")
        for bad, words in (("by=week", "by must be one of hour, shift, day"),
                           ("since=yesterday", "since must be a time like"),
                           ("by=hour&since=60d", "at most 31 days at once"),
                           ("since=1h&until=2h", "since must be before until"),
                           ("limit=5", "unknown parameter 'limit'"),
                           ("by=day&by=hour", "each parameter at most once"),
                           ("camera=" + "x" * 300, "at most 200 printable characters")):
            status, _, body = get(app.base + "/api/history?" + bad, token)
            assert status == 400 and words in json.loads(body)["error"], (bad, body)
        assert get(app.base + "/api/history")[0] == 401  # the token, as everywhere
        for method in ("POST", "PUT", "DELETE"):  # nothing writes
            assert get(app.base + "/api/history", token, method=method, data=b"")[0] == 405
        assert wait_for(lambda: (s := json.loads(get(app.base + "/api/status", token)[2])[
            "shift"])["violations"] > entries and s, "the second run's entries counted on")
    finally:
        stderr = app.stop()
    assert app.proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_the_api_says_when_there_is_no_history(tmp_path: Path) -> None:
    app = App(tmp_path, "--no-history")
    try:
        app.ready()
        status, _, body = get(app.base + "/api/history")
        assert status == 404 and "keeps no history" in json.loads(body)["error"]
        assert json.loads(get(app.base + "/api/status")[2])["shift"] is None
    finally:
        app.stop()


# --- retention ---------------------------------------------------------------------------------


def _seed(path: Path, walls: list[float], pad: int = 0) -> None:
    """An earlier run's events, stamped ``walls``."""
    conn = db.open_writer(path)
    try:
        run = db.begin_run(conn, "seed", walls[0] if walls else time.time(), ())
        conn.execute("BEGIN")
        conn.executemany(db.INSERT, [(run, *db.row_of(
            {"type": "graded", "stream": "old_camera", "grade": "old", "pad": "x" * pad}, w))
            for w in walls])
        conn.execute("COMMIT")
        db.end_run(conn, run, time.time())
    finally:
        conn.close()


def test_retention_by_days_at_start(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite"
    now = time.time()
    _seed(history, [now - 10 * 86400 + i for i in range(300)] + [now - 86400 + i
                                                               for i in range(200)])
    done = _run(tmp_path, tmp_path / "e.jsonl", "--history_keep_days", "5", frames=20)
    assert done.returncode == 0, done.stderr
    assert "history: 300 old event(s) deleted" in done.stderr
    oldest = _rows(history, "SELECT min(wall) FROM events")[0][0]
    assert oldest >= now - 86400 - 1
    assert _rows(history, "SELECT count(*) FROM events WHERE camera = 'old_camera'")[0][0] == 200
    counts = jsonl(tmp_path / "e.jsonl")[-1]["outputs"]["history"]
    assert counts["deleted"] == 300


def test_retention_by_size_at_start(tmp_path: Path) -> None:
    """Over the limit, the oldest events go first, and the file gives the space back."""
    history = tmp_path / "history.sqlite"
    now = time.time()
    _seed(history, [now - 3600 + i * 0.1 for i in range(4000)], pad=800)
    assert db.file_bytes(history) > 3 << 20
    done = _run(tmp_path, tmp_path / "e.jsonl", "--history_max_mb", "1", frames=20)
    assert done.returncode == 0, done.stderr
    assert db.file_bytes(history) <= 1 << 20  # closed: the WAL is folded in and gone
    left = _rows(history, "SELECT min(wall), count(*) FROM events WHERE camera = 'old_camera'")
    first_kept, kept = left[0]
    assert 0 < kept < 4000
    assert first_kept == pytest.approx(now - 3600 + (4000 - kept) * 0.1, abs=0.01)  # oldest out
    mine = _events(tmp_path / "e.jsonl")
    assert _rows(history, "SELECT count(*) FROM events WHERE camera IS NOT 'old_camera'")[0][0] \
        == len(mine)


def test_retention_while_writing(tmp_path: Path) -> None:
    """The writer keeps the file under its limit as it grows, newest events kept."""
    path = tmp_path / "h.sqlite"
    writer = HistoryWriter(path, "test", (), HistoryLimits(keep_days=30, max_bytes=300_000))
    writer.start()
    try:
        for i in range(3000):
            writer.record({"type": "graded", "stream": "c", "grade": "g", "n": i,
                           "pad": "x" * 400}, time.time())
        wait_for(lambda: writer.counts()["written"] == 3000, "every event written")
        writer._retain_at = 0.0  # as if a minute had passed
        wait_for(lambda: writer.deleted > 0, "retention")
    finally:
        writer.close()
    assert path.stat().st_size <= 300_000
    newest = _rows(path, "SELECT json FROM events ORDER BY id DESC LIMIT 1")[0][0]
    assert json.loads(newest)["n"] == 2999
    assert writer.counts()["received"] == 3000


# --- a full disk, a read-only file ---------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB filesystem (tmpfs), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the read-only file "
                    "test covers the failing half")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """A filler file that takes every free block."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:  # a short write, then ENOSPC
            f.write(b"\0" * 65536)
    return filler


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*APP, "--loop", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=60)[1]


def _frames(path: Path) -> int:
    return sum(1 for e in jsonl(path) if e["type"] == "frame")


def _of_history(kind: str, events: Path) -> dict[str, Any] | None:
    return next((e for e in jsonl(events) if e["type"] == kind
                 and e.get("output") == "history"), None)


def _whole(history: Path, events: Path, stderr: str) -> dict[str, Any]:
    """The run ended cleanly and the file holds exactly what the summary says it wrote."""
    logged = jsonl(events)
    assert logged[-1]["type"] == "summary", stderr
    counts: dict[str, Any] = logged[-1]["outputs"]["history"]
    assert counts["received"] == counts["written"] + counts["dropped"] + counts["lost"]
    assert counts["waiting"] == 0
    run = _rows(history, "SELECT max(run) FROM events")[0][0]
    assert _rows(history, "SELECT count(*) FROM events WHERE run = ?", run)[0][0] \
        == counts["written"]
    assert _rows(history, "PRAGMA integrity_check")[0][0] == "ok"
    return counts


def test_a_full_disk_is_reported_and_writing_resumes(tmp_path: Path, small_disk: Path) -> None:
    events, history, log = tmp_path / "events.jsonl", small_disk / "history.sqlite", \
        tmp_path / "run.log"
    proc = _start("--events", str(events), "--history", str(history), "--keepout_points_path",
                  str(_zone(tmp_path)), "--log_file", str(log))
    try:
        wait_for(lambda: history.is_file() and _rows(history, "SELECT count(*) FROM events")[0][0]
                 > 0, "the first events in the history")
        filler = _fill(small_disk)
        assert shutil.disk_usage(small_disk).free < 4096
        fault = wait_for(lambda: _of_history("output_fault", events), "the fault", timeout=120)
        at_fault = _frames(events)
        wait_for(lambda: _frames(events) > at_fault + 50, "inspection going on")
        filler.unlink()  # the operator frees space
        restored = wait_for(lambda: _of_history("output_restored", events), "writing again",
                            timeout=120)
    finally:
        stderr = _stop(proc)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "No space left" in fault["reason"] or "full" in fault["reason"], fault
    assert stderr.count("history: cannot write (") == 1, stderr
    counts = _whole(history, events, stderr)
    assert counts["error"] is None and counts["lost"] == restored["lost"]
    assert counts["written"] > 0


def test_a_full_disk_at_start_does_not_stop_the_run(tmp_path: Path, small_disk: Path) -> None:
    """The file cannot even be made: the run goes on, and the history begins once there is
    room, with the events that waited."""
    events, history = tmp_path / "events.jsonl", small_disk / "history.sqlite"
    filler = _fill(small_disk)
    proc = _start("--events", str(events), "--history", str(history), "--keepout_points_path",
                  str(_zone(tmp_path)))
    try:
        wait_for(lambda: _of_history("output_fault", events), "the fault")
        wait_for(lambda: sum(1 for e in _events(events) if e["type"] == "keepout_enter") > 0,
                 "events while the history cannot be written")
        filler.unlink()
        wait_for(lambda: _of_history("output_restored", events), "writing again")
    finally:
        stderr = _stop(proc)
    assert proc.returncode == 0, stderr
    counts = _whole(history, events, stderr)
    assert counts["lost"] == 0 and counts["written"] == counts["received"]
    written = {r[0] for r in _rows(history, "SELECT json FROM events")}
    logged = {json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in _events(events)}
    assert written <= logged and len(written) == counts["written"]


def _read_only(path: Path, on: bool) -> None:
    """Immutable for root too (permission bits are not, for root), else not writable."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)
    else:
        path.chmod(0o444 if on else 0o644)


def test_a_read_only_history_is_reported_and_its_totals_still_read(tmp_path: Path) -> None:
    events, history = tmp_path / "events.jsonl", tmp_path / "history.sqlite"
    first = _run(tmp_path, tmp_path / "first.jsonl", frames=70)
    assert first.returncode == 0, first.stderr
    earlier = len(_events(tmp_path / "first.jsonl"))
    _read_only(history, True)
    try:
        proc = _start("--events", str(events), "--keepout_points_path", str(_zone(tmp_path)))
        try:
            fault = wait_for(lambda: _of_history("output_fault", events), "the fault")
            wait_for(lambda: sum(1 for e in _events(events) if e["type"] == "keepout_enter"),
                     "events while the file is read-only")
            _read_only(history, False)
            wait_for(lambda: _of_history("output_restored", events), "writing again")
        finally:
            stderr = _stop(proc)
    finally:
        _read_only(history, False)
    assert proc.returncode == 0, stderr
    assert "readonly" in fault["reason"] and str(history) in fault["reason"]
    assert f"from 1 earlier run(s): {earlier} events" in stderr
    counts = _whole(history, events, stderr)
    assert counts["error"] is None and counts["lost"] == 0


def test_a_history_on_a_read_only_disk_is_refused_at_start(tmp_path: Path,
                                                           small_disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = _run(tmp_path, tmp_path / "e.jsonl", "--history", str(small_disk / "h.sqlite"),
                frames=2)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert f"--history {small_disk / 'h.sqlite'}" in last and "Read-only file system" in last


# --- what is counted ---------------------------------------------------------------------------


NEW_KINDS: list[dict[str, Any]] = [  # the JSON forms of the event types the station is adding
    {"type": "line_crossed", "stream": "belt", "line": "end", "direction": "out", "track": 4,
     "label": "apple", "grade": "fresh_apple", "passed": True},
    {"type": "line_crossed", "stream": "belt", "line": "end", "direction": "out", "track": 5,
     "label": "apple", "grade": "rotten_apple", "passed": False},
    {"type": "line_crossed", "stream": "door", "line": "door", "direction": "in", "track": 1,
     "label": "person"},
    {"type": "line_crossed", "stream": "door", "line": "door", "direction": "in", "track": 2,
     "label": "person"},
    {"type": "zone_dwell_exceeded", "stream": "door", "zone": "press", "track": 2,
     "seconds": 31.5},
    {"type": "presence_missing", "stream": "shelf", "check": "bottles", "label": "bottle",
     "expected": 3, "seen": 2},
    {"type": "presence_restored", "stream": "shelf", "check": "bottles", "label": "bottle",
     "expected": 3, "seen": 3},
    {"type": "camera_blind", "stream": "door", "reason": "no signal"},
    {"type": "camera_restored", "stream": "door", "reason": "frames again"},
    {"type": "something_new", "stream": "belt", "zone": "z9", "extra": {"nested": [1]}},
]


def test_event_types_it_does_not_know_are_stored_and_counted_by_their_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.sqlite"
    writer = HistoryWriter(path, "test", (), HistoryLimits(30, 10**9))
    writer.start()
    now = time.time()
    for record in NEW_KINDS:
        writer.record(record, now)
    writer.close()
    with contextlib.closing(db.open_reader(path)) as conn:
        made = report(conn, Query(by="day"))
    got = {(r.key.type, r.key.camera, r.key.line, r.key.direction, r.key.zone, r.key.check,
            r.key.grade, r.key.passed): r.count for r in made.rows}
    assert got == {
        ("line_crossed", "belt", "end", "out", None, None, "fresh_apple", True): 1,
        ("line_crossed", "belt", "end", "out", None, None, "rotten_apple", False): 1,
        ("line_crossed", "door", "door", "in", None, None, None, None): 2,
        ("zone_dwell_exceeded", "door", None, None, "press", None, None, None): 1,
        ("presence_missing", "shelf", None, None, None, "bottles", None, None): 1,
        ("presence_restored", "shelf", None, None, None, "bottles", None, None): 1,
        ("camera_blind", "door", None, None, None, None, None, None): 1,
        ("camera_restored", "door", None, None, None, None, None, None): 1,
        ("something_new", "belt", None, None, "z9", None, None, None): 1,
    }
    stored = [json.loads(r[0]) for r in _rows(path, "SELECT json FROM events ORDER BY id")]
    assert stored == NEW_KINDS  # whole, in order
    totals = writer.totals()
    assert totals.total("line_crossed", "belt", line="end", direction="out") == 2
    assert totals.total("presence_missing", check="bottles") == 1
    assert totals.line("door") == "shift 00:00: door in 2"
    assert totals.line("belt").endswith("end out 2")
    table = as_table(made)
    assert "check" in table.splitlines()[1] and "bottles" in table


def test_shifts_are_cut_in_local_time_alike_by_the_station_and_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a half-hour offset, events around each shift start fall in the shift the
    station counts them in, and the report (SQLite's cut) agrees."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        starts = shift_times("22:00, 6:00,14:00")
        assert starts == ("06:00", "14:00", "22:00")
        day = dt.date(2026, 3, 10)
        walls = [dt.datetime.combine(day + dt.timedelta(days=d), dt.time(h, m, s)).timestamp()
                 for d in (0, 1) for h, m, s in ((5, 59, 59), (6, 0, 0), (13, 59, 59),
                                                 (14, 0, 0), (21, 59, 59), (22, 0, 0),
                                                 (23, 59, 59), (0, 0, 0))]
        assert shift_of(walls[0], starts).name == "2026-03-09 22:00"
        assert shift_of(walls[1], starts).name == "2026-03-10 06:00"
        assert shift_of(walls[7], starts).name == "2026-03-09 22:00"  # midnight: the night's
        assert shift_of(walls[15], starts).name == "2026-03-10 22:00"
        p = shift_of(walls[5], starts)
        assert (p.end - p.start) == 8 * 3600 and p.holds(walls[6]) and not p.holds(walls[4])
        path = tmp_path / "h.sqlite"
        conn = db.open_writer(path)
        run = db.begin_run(conn, "test", walls[0], starts)
        conn.executemany(db.INSERT, [(run, *db.row_of({"type": "graded", "n": i}, w))
                                     for i, w in enumerate(walls)])
        made = report(conn, Query(by="shift"))  # the station's shifts, from the file
        conn.close()
        expected = Counter(shift_of(w, starts).name for w in walls)
        assert {r.period: r.count for r in made.rows} == dict(expected)
        assert made.shifts == starts
    finally:
        monkeypatch.undo()
        time.tzset()


def test_web_queries_are_bounded() -> None:
    now = time.time()
    q = web_query({}, now, ())
    assert (q.by, q.until, now - (q.since or 0)) == ("hour", now, 86400)
    assert web_query({"by": "day", "since": "400d"}, now, ()).since == now - 400 * 86400
    with pytest.raises(ValueError, match="at most 400 days"):
        web_query({"by": "day", "since": "401d"}, now, ())
    with pytest.raises(ValueError, match="at most 32 names"):
        web_query({"type": ",".join(f"t{i}" for i in range(33))}, now, ())
    assert EventKey("graded").record()["zone"] is None


# --- a person's mistakes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "the following arguments are required: --history"),
        (["--history", "{h}", "--by", "week"], "argument --by: invalid choice: 'week'"),
        (["--history", "{h}", "--format", "xml"], "argument --format: invalid choice"),
        (["--history", "{h}", "--since", "last tuesday"], "--since 'last tuesday': must be a "
                                                          "time like 2026-11-24"),
        (["--history", "{h}", "--since", "2026-01-02", "--until", "2026-01-01"],
         "--since 2026-01-02 is not before --until 2026-01-01"),
        (["--history", "{h}", "--shifts", "25:00"], "--shifts '25:00': must be times of day"),
        (["--history", "{missing}"], "not found: pass the file the station keeps"),
        (["--history", str(ROOT / "README.md")], "is not a coral-mfg history (file is not a "
                                                 "database)"),
        (["--history", "{other}"], "is not a coral-mfg history (an SQLite file of other "
                                   "tables)"),
    ],
    ids=["no-history", "by", "format", "since", "since-until", "shifts", "missing", "not-sqlite",
         "other-sqlite"],
)
def test_bad_report_arguments_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], words: str,
) -> None:
    history, other = tmp_path / "h.sqlite", tmp_path / "other.sqlite"
    _seed(history, [time.time()])
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (x)")
    given = [a.format(h=history, missing=tmp_path / "nope.sqlite", other=other) for a in args]
    done = _report(*given)
    assert done.returncode == 2, done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--no-history", "--history", "x.sqlite"], "x.sqlite say the opposite: drop one"),
        (["--events", "{t}/e.jsonl", "--history", "{t}/e.jsonl"], "is the event log too"),
        (["--shifts", "6am"], "must be times of day as \"HH:MM\""),
        (["--history", "{t}/not-a-history.sqlite"], "is not a coral-mfg history"),
    ],
    ids=["both", "same-file", "shifts", "not-a-history"],
)
def test_bad_history_settings_exit_2_in_one_line(
    tmp_path: Path, args: list[str], words: str,
) -> None:
    (tmp_path / "not-a-history.sqlite").write_text("hello\n" * 100)
    done = subprocess.run([*APP, "--max_frames", "1", *(a.format(t=tmp_path) for a in args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr.strip().splitlines()[-1], done.stderr
    assert "Traceback" not in done.stderr
