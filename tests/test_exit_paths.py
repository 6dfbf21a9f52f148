"""However a run ends, what it counted is what it wrote: every object counted in the
summary has its ``graded`` event, also the ones still in view when the run stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, assert_whole_lines, jsonl, wait_for

APP = [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu"]



def assert_counts_are_events(events: list[dict[str, Any]]) -> Counter[str]:
    """The summary's inspected counts, each equal to the ``graded`` events written."""
    summary = events[-1]
    assert summary["type"] == "summary"
    graded = Counter(e["grade"] for e in events if e["type"] == "graded")
    counted = Counter({grade: n for grade, n in summary["inspected"].items() if n})
    assert graded == counted, (graded, counted)
    ids = [e["id"] for e in events if e["type"] == "graded"]
    assert len(set(ids)) == len(ids)
    return counted


def _in_view(events: list[dict[str, Any]]) -> bool:
    """An apple with a verdict has been in the picture on the newest four inspection
    frames: it is counted (three frames make an object), and still in view."""
    frames = [e for e in events if e["type"] == "frame" and e["stream"] == "visual_inspection"]
    if len(frames) < 4:
        return False
    tracks = [{o["track"] for o in f["objects"] if o["grade"] and not o["predicted"]}
              for f in frames[-4:]]
    return bool(set.intersection(*tracks))


@pytest.mark.parametrize(
    "args",
    [["--no-realtime"], ["--no-realtime", "--max_frames", "25"]],
    ids=["end-of-file", "max-frames"],
)
def test_a_run_that_ends_by_itself(tmp_path: Path, args: list[str]) -> None:
    events = tmp_path / "events.jsonl"
    done = subprocess.run([*APP, *args, "--events", str(events)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert_whole_lines(events)
    logged = jsonl(events)
    counted = assert_counts_are_events(logged)
    assert counted  # an apple was in view at the end: its verdict is written too
    last = max(i for i, e in enumerate(logged) if e["type"] == "frame")
    assert [e["type"] for e in logged[last + 1:-1]] == ["graded"] * (len(logged) - last - 2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_run_stopped_by_a_signal_with_an_apple_in_view(tmp_path: Path, sig: int) -> None:
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([*APP, "--loop", "--events", str(events)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _in_view(jsonl(events)), "an apple with a verdict in view")
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert_whole_lines(events)
    logged = jsonl(events)
    assert_counts_are_events(logged)
    assert logged[-2]["type"] == "graded"  # the one in view, ended with the run


def test_an_output_failing_as_it_closes_does_not_lose_the_summary(tmp_path: Path) -> None:
    """The broker goes bad exactly when the run ends: the event log still ends with the
    summary, and the failure is one logged line."""
    from coral_mfg.config.flags import resolve_settings, run_parser
    from coral_mfg.runtime.builder import build_pipeline
    from tests.conftest import free_port

    events = tmp_path / "events.jsonl"
    settings = resolve_settings(run_parser().parse_args(
        ["--headless", "--device", "cpu", "--no-realtime", "--max_frames", "5",
         "--events", str(events), "--mqtt", f"mqtt://127.0.0.1:{free_port()}"]))
    pipeline = build_pipeline(settings)
    assert pipeline.mqtt is not None

    def broken() -> None:
        raise RuntimeError("the broker's socket broke")

    pipeline.mqtt.close = broken  # type: ignore[method-assign]
    pipeline.start()
    while not pipeline.poll(0.2):
        pass
    summary = pipeline.close()
    assert jsonl(events)[-1] == summary
    assert summary["frames"] == {"worker_safety": 5, "visual_inspection": 5}


def test_accept_failures_are_counted_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    from coral_mfg.web.guard import Repeats, loop_exception_handler

    counted = Repeats("accept() failed")
    handle = loop_exception_handler(counted)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level("WARNING", logger="coral_mfg.web.guard"):
            for _ in range(500):
                handle(loop, {"message": "socket.accept() out of system resource",
                              "exception": OSError(24, "Too many open files")})
    finally:
        loop.close()
    assert counted.count == 500
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["web view: accept() failed: cannot accept connections (Too many open "
                     "files)"]
    assert not any(r.exc_info for r in caplog.records)
