"""Bad inputs end in one line naming the thing and the fix, exit 2, no traceback;
signals stop a run cleanly with its files complete."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from coral_mfg.config.flags import resolve_settings, run_parser
from coral_mfg.outputs.panel import STRIP_HEIGHT
from coral_mfg.runtime.builder import build_pipeline
from coral_mfg.runtime.pipeline import Pipeline
from tests.conftest import ROOT, video


def _run(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu",
                             *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            check=False)
    return result, time.monotonic() - start


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("coral-mfg: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def silent_server() -> Iterator[str]:
    """A TCP server on loopback that accepts and never answers."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/stream.mjpg"
    stop.set()
    thread.join(2)
    for c in held:
        c.close()
    server.close()


def _bad_files(tmp: Path) -> dict[str, Path]:
    text = tmp / "notes.mp4"
    text.write_text("not a video\n")
    truncated = tmp / "truncated.mp4"
    truncated.write_bytes(video("apple-conveyor.mp4").read_bytes()[:100_000])
    folder = tmp / "clips"
    folder.mkdir()
    fifo = tmp / "feed.mp4"
    os.mkfifo(fifo)
    return {"text": text, "truncated": truncated, "folder": folder, "fifo": fifo}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing", "video file {path} not found: pass an existing file"),
        ("folder", "{path} is a folder, not a video file: pass a video file"),
        ("fifo", "{path} is a named pipe (FIFO), which cannot be read as a video file"),
        ("text", "cannot open file {path}: pass a video file OpenCV/FFmpeg can decode"),
        ("truncated", "video file {path} delivers no frames (empty, truncated or not a video)"),
        ("camera", "camera /dev/video9 not found: plug it in or pass another /dev/videoN"),
        ("refused", "cannot open stream rtsp://127.0.0.1:9/line: check the URL"),
        ("refused-with-password",
         "cannot open stream rtsp://plc:***@127.0.0.1:9/line: check the URL"),
    ],
)
def test_bad_video_inputs(tmp_path: Path, source: str, message: str) -> None:
    files = _bad_files(tmp_path)
    path = {"missing": str(tmp_path / "gone.mp4"), "camera": "/dev/video9",
            "refused": "rtsp://127.0.0.1:9/line",
            "refused-with-password": "rtsp://plc:s3cret@127.0.0.1:9/line",
            }.get(source) or str(files[source])
    result, _ = _run("--visual_inspection_input", path)
    assert message.format(path=path) in _error_line(result)
    assert "s3cret" not in result.stderr + result.stdout


def test_doctor_names_a_stream_without_its_password_or_ffmpegs_chatter() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coral_mfg", "doctor", "--worker_safety_input",
         "rtsp://plc:s3cret@127.0.0.1:9/line"], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False)
    out = result.stdout + result.stderr
    assert "cannot open stream rtsp://plc:***@127.0.0.1:9/line" in out, out
    assert "s3cret" not in out
    assert "Connection refused" not in out and "VIDEOIO" not in out, out


def test_unresponsive_stream_fails_within_seconds(silent_server: str) -> None:
    result, elapsed = _run("--worker_safety_input", silent_server)
    assert f"cannot open stream {silent_server}" in _error_line(result)
    assert elapsed < 15  # the 5 s open timeout, plus start-up


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("x,y\n1,2\n", "needs at least 3 points"),
        ("a;b\n", "the first line must be the header 'x,y'"),
        ("x,y\n0,0\n2000,0\n0,100\n", "is outside the 960x540 frame"),
    ],
)
def test_bad_keepout_csv(tmp_path: Path, content: str, message: str) -> None:
    csv = tmp_path / "zone.csv"
    csv.write_text(content)
    result, _ = _run("--keepout_points_path", str(csv))
    line = _error_line(result)
    assert str(csv) in line and message in line


def _looping_app(events: Path, *extra: str, lines: int = 20) -> subprocess.Popen[str]:
    """The app on the looping samples, once its event log has ``lines`` lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop",
         "--events", str(events), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        not events.exists() or len(events.read_text().splitlines()) < lines
    ):
        time.sleep(0.1)
    return proc


def test_sigterm_stops_cleanly_with_complete_outputs(tmp_path: Path) -> None:
    events, output = tmp_path / "events.jsonl", tmp_path / "out.mp4"
    proc = _looping_app(events, "--output", str(output), lines=60)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    # Stopped by its own steps, none cut short by its join deadlines (how long that takes
    # depends on the machine's load, so it is not asserted here).
    assert "threads still running at exit" not in stderr, stderr
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert lines[-1]["type"] == "summary"
    frame_lines = [x for x in lines if x["type"] == "frame"]
    assert sum(lines[-1]["frames"].values()) == len(frame_lines)
    cap = cv2.VideoCapture(str(output))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count >= 20
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                            "-show_entries", "stream=nb_read_frames,width,height", "-of", "json",
                            str(output)], capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["width"], stream["height"]) == (1920, 540 + STRIP_HEIGHT)
    assert int(stream["nb_read_frames"]) == count


def _finished_pipeline(max_frames: int) -> Pipeline:
    """An in-process headless run over the samples, run to its end but not closed."""
    settings = resolve_settings(run_parser().parse_args(
        ["--headless", "--device", "cpu", "--no-realtime", "--max_frames", str(max_frames)]))
    pipeline = build_pipeline(settings)
    pipeline.start()
    while not pipeline.poll(0.2):
        pass
    return pipeline


def test_no_thread_outlives_the_run() -> None:
    """In-process run: every thread the pipeline started has ended when it returns."""
    before = set(threading.enumerate())
    summary = _finished_pipeline(15).close()
    assert summary["frames"] == {"worker_safety": 15, "visual_inspection": 15}
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, left


def test_log_file_states_versions_models_inputs_and_stats(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "coral-mfg.log"
    result, _ = _run("--no-realtime", "--max_frames", "5", "--log_file", str(log_file))
    assert result.returncode == 0, result.stderr
    text = log_file.read_text()
    for needle in ("versions: python", "numpy", "opencv", "ai_edge_litert", "detector:",
                   "inference: 2 cpu process(es): detector ", ", classifier ",
                   "camera worker_safety: ", "camera visual_inspection: ",
                   "keep-out zones keepout", "summary:"):
        assert needle in text, needle


def test_stats_are_logged_per_stream(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    pipeline = _finished_pipeline(10)
    with caplog.at_level(logging.INFO, logger="coral_mfg.runtime.pipeline"):
        pipeline._log_stats(every_s=0.0)
    pipeline.close()
    lines = [r.getMessage() for r in caplog.records]
    for stream in ("worker_safety", "visual_inspection"):
        assert any(line.startswith(f"{stream}: ") and "fps" in line and "dropped" in line
                   and "errors" in line for line in lines), lines


def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    proc = _looping_app(events)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "threads still running at exit" not in stderr, stderr
    assert json.loads(events.read_text().splitlines()[-1])["type"] == "summary"
    assert "SIGINT: stopping" in stderr


def test_second_ctrl_c_forces_exit(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    proc = _looping_app(events)
    # Ctrl-C held down: the first begins the clean shutdown, the next one cuts it short
    # (signals sent while one is pending merge, so keep sending until the process ends)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.005)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    # whatever was written is whole lines: the log is flushed line by line
    for line in events.read_text().splitlines():
        json.loads(line)
