"""Nothing lost: H.264 recordings that survive SIGKILL, outputs that survive a full disk,
files that end where the decoder says, retention and rotation. Real encoders, real
files, real signals; a full disk is a real small tmpfs (or /dev/full where no
filesystem can be mounted)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from coral_mfg.outputs.encoder import QUEUE_FRAMES
from coral_mfg.outputs.event_log import EventLog, Rotation
from coral_mfg.outputs.retention import Retention, prune
from tests.conftest import ROOT, assert_whole_lines, jsonl, video, wait_for
from tests.conftest import frames as frames_of

APP = [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu"]





def _frames(events: list[dict[str, Any]], stream: str | None = None) -> int:
    return sum(1 for e in events if e["type"] == "frame" and stream in (None, e["stream"]))


def _probe(path: Path) -> tuple[str, str, int]:
    """(codec, pixel format, decodable frames) as ffprobe reads them."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,pix_fmt,nb_read_frames", "-of", "json", str(path)],
        capture_output=True, text=True, check=True)
    s = json.loads(out.stdout)["streams"][0]
    return s["codec_name"], s["pix_fmt"], int(s["nb_read_frames"])


def _size(path: Path) -> tuple[int, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=width,height", "-of", "json", str(path)],
        capture_output=True, text=True, check=True)
    s = json.loads(out.stdout)["streams"][0]
    return int(s["width"]), int(s["height"])


def _rate(path: Path) -> float:
    """The frame rate a player plays the file at."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=r_frame_rate", "-of", "json", str(path)],
        capture_output=True, text=True, check=True)
    num, _, den = json.loads(out.stdout)["streams"][0]["r_frame_rate"].partition("/")
    return int(num) / int(den or 1)


def _opencv_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*APP, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    return stderr


# --- SIGKILL, SIGHUP -------------------------------------------------------------------------


def test_sigkill_leaves_a_playable_h264_recording(tmp_path: Path) -> None:
    """Every frame but those still in flight at the kill decodes, with ffprobe and OpenCV.

    Unpaced, every frame is recorded (the run waits for the encoder), so what was
    logged and what was encoded differ only by what the kill cut, a bound set by the
    pipeline's structure, not by time: the frames waiting in the encoder's queue, the
    keyframe interval being fragmented, and the panes of the tile waiting for their
    partner camera (each tile needs a frame from both).
    """
    events, output = tmp_path / "events.jsonl", tmp_path / "out.mp4"
    proc = _start("--loop", "--no-realtime", "--events", str(events), "--output", str(output))
    try:
        wait_for(lambda: _frames(jsonl(events)) >= 150, "150 frames")
        proc.kill()
        proc.wait(30)
    finally:
        _stop(proc)
    assert_whole_lines(events)  # the kill left no half-written record
    logged = jsonl(events)
    per_camera = [_frames(logged, "worker_safety"), _frames(logged, "visual_inspection")]
    tiles = min(per_camera)  # tiles composed: each waits for a frame of both cameras
    codec, pix_fmt, decodable = _probe(output)
    assert (codec, pix_fmt) == ("h264", "yuv420p")
    assert _opencv_frames(output) == decodable
    gop = 15  # a keyframe a second at the recording's rate (the faster sample's)
    in_flight = QUEUE_FRAMES + gop + 1  # queued, in the open fragment, in hand
    assert tiles - in_flight <= decodable <= max(per_camera), (decodable, per_camera)


def test_sighup_stops_cleanly_with_complete_outputs(tmp_path: Path) -> None:
    events, output = tmp_path / "events.jsonl", tmp_path / "out.mp4"
    proc = _start("--loop", "--events", str(events), "--output", str(output))
    try:
        wait_for(lambda: _frames(jsonl(events)) >= 40, "40 frames")
    finally:
        stderr = _stop(proc, signal.SIGHUP)
    assert proc.returncode == 0, stderr
    assert "SIGHUP: stopping" in stderr
    summary = jsonl(events)[-1]
    assert summary["type"] == "summary"
    rec = summary["outputs"]["recording"]
    assert rec["received"] == rec["written"] + rec["dropped"] + rec["lost"]
    assert rec["lost"] == 0
    assert _probe(output)[2] == rec["written"]


# --- a full disk -----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB filesystem (tmpfs), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the /dev/full tests "
                    "cover the failing half")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves ``leave`` bytes free."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_recording_survives_a_full_disk_and_resumes(tmp_path: Path, small_disk: Path) -> None:
    events, output = tmp_path / "events.jsonl", small_disk / "out.mp4"
    filler = _fill(small_disk, 1_500_000)
    proc = _start("--loop", "--events", str(events), "--output", str(output))
    try:
        wait_for(lambda: any(e["type"] == "output_fault" for e in jsonl(events)), "the fault")
        at_fault = _frames(jsonl(events))
        wait_for(lambda: _frames(jsonl(events)) > at_fault + 30, "inspection going on")
        filler.unlink()  # the operator frees space
        wait_for(lambda: any(e["type"] == "output_restored" for e in jsonl(events)), "resume")
        wait_for(lambda: (small_disk / "out.1.mp4").exists()
              and (small_disk / "out.1.mp4").stat().st_size > 100_000, "the new file")
    finally:
        stderr = _stop(proc)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.count("recording: cannot write (No space left on device") == 1, stderr
    logged = jsonl(events)
    fault = next(e for e in logged if e["type"] == "output_fault")
    assert fault["output"] == "recording" and "No space left" in fault["reason"]
    restored = next(e for e in logged if e["type"] == "output_restored")
    rec = logged[-1]["outputs"]["recording"]
    assert rec["lost"] == restored["lost"] > 0
    assert rec["received"] == rec["written"] + rec["dropped"] + rec["lost"]
    assert rec["error"] is None and rec["files"] == 2
    for part in ("out.mp4", "out.1.mp4"):  # the cut file and the new one both play
        codec, _, decodable = _probe(small_disk / part)
        assert codec == "h264" and decodable > 0


def test_event_log_survives_a_full_disk_in_whole_lines(tmp_path: Path, small_disk: Path) -> None:
    events, log = small_disk / "events.jsonl", tmp_path / "run.log"
    filler = _fill(small_disk, 60_000)
    proc = _start("--loop", "--events", str(events), "--log_file", str(log))
    try:
        wait_for(lambda: log.exists() and "event log: cannot write" in log.read_text(),
              "the disk to fill")
        size = events.stat().st_size
        assert shutil.disk_usage(small_disk).free <= 4096  # the last block of the disk
        filler.unlink()
        wait_for(lambda: events.stat().st_size > size + 20_000, "logging to resume")
        assert proc.poll() is None  # inspection never stopped
    finally:
        stderr = _stop(proc)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert stderr.count("event log: cannot write (No space left on device") == 1, stderr
    assert_whole_lines(events)
    logged = jsonl(events)
    kinds = [e["type"] for e in logged]
    assert "output_fault" in kinds and "output_restored" in kinds
    counts = logged[-1]["outputs"]["events"]
    restored = next(e for e in logged if e["type"] == "output_restored")
    assert counts["lost"] == restored["lost"] > 0
    assert counts["written"] == len(logged) - 1  # every line but the summary itself
    frames = logged[-1]["frames"]
    assert _frames(logged) < sum(frames.values())  # frame records were lost, and counted


def test_dev_full_is_reported_not_fatal(tmp_path: Path) -> None:
    """Where no filesystem can be mounted: a device that is always full."""
    events = tmp_path / "events.jsonl"
    proc = subprocess.run([*APP, "--no-realtime", "--max_frames", "20", "--events",
                           str(events), "--output", "/dev/full"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("recording: cannot write (No space left on device") == 1
    logged = jsonl(events)
    faults = [e for e in logged if e["type"] == "output_fault"]
    assert faults and all({"id", "timestamp", "station", "time"} <= set(e) for e in faults)
    summary = logged[-1]
    rec = summary["outputs"]["recording"]
    assert rec["written"] == 0 and rec["lost"] == rec["received"] > 0
    assert summary["frames"] == {"worker_safety": 20, "visual_inspection": 20}


def test_event_log_write_failure_cuts_back_to_whole_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short write (the disk filled mid-line) leaves no partial line behind."""
    log = EventLog(tmp_path / "e.jsonl", 0.0)
    log.record({"type": "a"})
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    log.record({"type": "b", "pad": "x" * 100})
    monkeypatch.setattr(os, "write", real_write)
    log.record({"type": "c"})  # within the retry interval: counted lost, not tried
    log.health._next_try = 0.0  # as if the retry interval had passed
    log.record({"type": "d"})
    log.close()
    assert_whole_lines(tmp_path / "e.jsonl")
    assert [e["type"] for e in jsonl(tmp_path / "e.jsonl")] == ["a", "d"]
    assert log.health.counts()["lost"] == 2
    assert log.health.error is None


# --- files end where they end ----------------------------------------------------------------


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


def _vfr(path: Path) -> None:
    """The worker sample with its second half at a third of the rate: variable frame rate."""
    _ffmpeg("-i", str(video("worker-zone-detection.mp4")), "-vf",
            "setpts='if(lt(N,35),N,35+(N-35)*3)/15/TB'", "-fps_mode", "vfr",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))


def _truncated(path: Path) -> None:
    """The apple sample with its index first, cut after 60 % of its bytes."""
    whole = path.with_name("whole.mp4")
    _ffmpeg("-i", str(video("apple-conveyor.mp4")), "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", str(whole))
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])


@pytest.mark.parametrize("make", [_vfr, _truncated], ids=["vfr", "truncated"])
@pytest.mark.parametrize("loop", [False, True], ids=["once", "looping"])
def test_a_file_ends_after_its_last_decodable_frame(
    tmp_path: Path, make: Callable[[Path], None], loop: bool
) -> None:
    src = tmp_path / "input.mp4"
    make(src)
    decodable = _opencv_frames(src)
    assert decodable > 0
    events = tmp_path / "events.jsonl"
    args = ["--no-realtime", "--visual_inspection_input", str(src), "--events", str(events)]
    if loop:  # two passes, then stop: the second replays from memory
        args += ["--loop", "--max_frames", str(2 * decodable)]
    proc = subprocess.run([*APP, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    logged = jsonl(events)
    indices = [e["frame"] for e in logged if e["type"] == "frame"
               and e["stream"] == "visual_inspection"]
    assert indices == list(range(decodable)) * (2 if loop else 1)
    assert not [e for e in logged if e["type"] == "source_lost"]


# --- retention and rotation ------------------------------------------------------------------


def _aged_files(folder: Path, count: int, size: int) -> list[Path]:
    files = []
    now = time.time()
    for i in range(count):  # the first is the oldest
        path = folder / f"coral_mfg-2026010{i}-000000.mp4"
        path.write_bytes(b"\0" * size)
        os.utime(path, (now - (count - i) * 3600, now - (count - i) * 3600))
        files.append(path)
    return files


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        (Retention(max_bytes=3_000, max_age_s=1e9, min_free_bytes=0), [3, 4, 5]),
        (Retention(max_bytes=10**9, max_age_s=2.5 * 3600, min_free_bytes=0), [4, 5]),
        (Retention(max_bytes=10**9, max_age_s=1e9, min_free_bytes=0), [0, 1, 2, 3, 4, 5]),
        (Retention(max_bytes=0, max_age_s=0, min_free_bytes=0), [5]),  # never the current
    ],
    ids=["size", "age", "within", "current"],
)
def test_retention_deletes_the_oldest_first(
    tmp_path: Path, policy: Retention, kept: list[int]
) -> None:
    files = _aged_files(tmp_path, 6, 1_000)
    pruned = prune(tmp_path, policy, current=files[-1])
    assert sorted(tmp_path.glob("*.mp4")) == [files[i] for i in kept]
    assert list(pruned.deleted) == [f for i, f in enumerate(files) if i not in kept]


def test_retention_keeps_free_space_above_the_floor(small_disk: Path) -> None:
    files = _aged_files(small_disk, 4, 1_000_000)
    floor = shutil.disk_usage(small_disk).free + 1_500_000
    pruned = prune(small_disk, Retention(10**12, 1e9, floor), current=files[-1])
    assert list(pruned.deleted) == files[:2] and not pruned.low
    assert shutil.disk_usage(small_disk).free >= floor


def test_segments_roll_and_retention_runs_during_the_run(tmp_path: Path) -> None:
    """Each camera records into a folder of its own, under its share of ``keep_gb``."""
    rec, events = tmp_path / "rec", tmp_path / "events.jsonl"
    proc = _start("--loop", "--events", str(events), "--record_dir", str(rec),
                  "--segment_minutes", "0.02", "--keep_gb", "0.0012")
    cameras = ("worker_safety", "visual_inspection")
    try:
        wait_for(lambda: all(len(list((rec / c).glob("*.mp4"))) >= 2 for c in cameras)
              and _frames(jsonl(events)) >= 300, "several segments")
    finally:
        stderr = _stop(proc)
    assert proc.returncode == 0, stderr
    assert sorted(p.name for p in rec.iterdir()) == sorted(cameras)
    outputs = jsonl(events)[-1]["outputs"]
    assert "(retention)" in stderr
    for camera in cameras:
        seg = outputs[f"segments:{camera}"]
        folder = rec / camera
        assert seg["deleted"] > 0 and seg["files"] > len(list(folder.glob("*.mp4")))
        source = {"worker_safety": "worker-zone-detection.mp4",
                  "visual_inspection": "apple-conveyor.mp4"}[camera]
        seen = cv2.VideoCapture(str(video(source))).get(cv2.CAP_PROP_FPS)  # 15 and 12.5
        for path in sorted(folder.glob("*.mp4")):
            assert _probe(path)[0] == "h264" and _size(path) == (960, 612)  # one camera
            assert _rate(path) == pytest.approx(seen)  # plays at the speed it was seen
        assert seg["recent"] and all(Path(p).is_file() for p in seg["recent"])  # none deleted


def test_composite_segments_tile_every_camera(tmp_path: Path) -> None:
    rec, events = tmp_path / "rec", tmp_path / "events.jsonl"
    proc = _start("--events", str(events), "--record_dir", str(rec), "--record_composite",
                  "--max_frames", "30")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    files = sorted(rec.glob("*.mp4"))
    assert len(files) == 1 and not [p for p in rec.iterdir() if p.is_dir()]
    codec, _, frames = _probe(files[0])
    assert codec == "h264" and _size(files[0]) == (1920, 612) and frames == 30
    assert jsonl(events)[-1]["outputs"]["segments"]["written"] == 30


def _decode_errors(path: Path) -> str:
    """What FFmpeg says while decoding every frame of ``path`` (empty: it plays cleanly)."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                         capture_output=True, text=True, check=False)
    return out.stderr.strip() if out.returncode == 0 else out.stderr.strip() or "failed"


def test_a_recording_cut_anywhere_is_cut_back_to_what_plays(tmp_path: Path) -> None:
    """A real fragmented MP4 from the encoder, cut at many points as a failing write would
    leave it: the repair keeps exactly the whole fragments, and FFmpeg decodes them
    without a single error; with no whole fragment the file is deleted."""
    from coral_mfg.outputs.encoder import H264Writer, RecordTarget, playable_end, repair

    whole = tmp_path / "whole.mp4"
    writer = H264Writer(RecordTarget(file=whole), (320, 180), 10.0, lossless=True)
    writer.start()
    source = frames_of("worker-zone-detection.mp4")
    for i in range(45):  # 4.5 s: a fragment a second
        writer.submit(np.asarray(cv2.resize(source[i % len(source)], (320, 180)), np.uint8))
    writer.finish(60)
    data = whole.read_bytes()
    assert playable_end(data) > 0 and not _decode_errors(whole)
    ends = sorted({playable_end(data[:cut]) for cut in range(0, len(data), 997)})
    assert len(ends) >= 4  # several fragments were whole at some cut
    for cut in [*range(0, len(data), len(data) // 23), len(data) - 1]:
        part = tmp_path / f"cut-{cut}.mp4"
        part.write_bytes(data[:cut])
        kept = repair(part)
        if playable_end(data[:cut]) == 0:
            assert not kept and not part.exists()
            continue
        assert kept and part.stat().st_size == playable_end(data[:cut])
        assert not _decode_errors(part), cut
        assert _probe(part)[2] > 0


def test_segments_on_a_full_disk_all_play(tmp_path: Path, small_disk: Path) -> None:
    """Segments cut by a full disk are cut back to what plays, or removed when nothing
    does; the summary names only files that exist."""
    events, rec = tmp_path / "events.jsonl", small_disk / "rec"
    filler = _fill(small_disk, 900_000)
    proc = _start("--loop", "--events", str(events), "--record_dir", str(rec),
                  "--segment_minutes", "0.05", "--record_composite")
    try:
        wait_for(lambda: any(e["type"] == "output_fault" for e in jsonl(events)), "the fault")
        at_fault = _frames(jsonl(events))
        wait_for(lambda: _frames(jsonl(events)) > at_fault + 60, "retries on the full disk")
        filler.unlink()
        wait_for(lambda: any(e["type"] == "output_restored" for e in jsonl(events)), "resume")
        wait_for(lambda: len([p for p in rec.glob("*.mp4") if p.stat().st_size > 0]) >= 2,
                 "a segment after the fault")
    finally:
        stderr = _stop(proc)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    files = sorted(rec.glob("*.mp4"))
    assert files
    for path in files:
        assert path.stat().st_size > 0, path
        assert not _decode_errors(path), path
    seg = jsonl(events)[-1]["outputs"]["segments"]
    assert all(Path(p).is_file() for p in seg["recent"])


def test_event_log_rotates_by_size_and_keeps_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, 0.0, Rotation(max_bytes=1_000, keep=2))
    for i in range(100):
        log.record({"type": "frame", "i": i, "pad": "x" * 40})
    log.close()
    rotated = log.rotated_files()
    assert len(rotated) == 2 and log.rotated > 2
    seen = [e["i"] for p in [*rotated, path] for e in jsonl(p)]
    assert seen == list(range(100 - len(seen), 100))  # the newest, in order, none twice
    assert all(p.stat().st_size <= 1_000 for p in [*rotated, path])


def test_event_log_rotates_by_day(tmp_path: Path) -> None:

    path = tmp_path / "events.jsonl"
    log = EventLog(path, 0.0, Rotation(daily=True))
    log.record({"type": "yesterday"})
    log._opened -= 86400  # as if the file had been started yesterday
    log.record({"type": "today"})
    log.close()
    (old,) = log.rotated_files()
    assert [e["type"] for e in jsonl(old)] == ["yesterday"]
    assert [e["type"] for e in jsonl(path)] == ["today"]


# --- sources that come back ------------------------------------------------------------------


def test_a_live_source_is_retried_at_least_every_two_seconds() -> None:
    """However long the outage, a returning camera is reopened within 2 s (plus scheduling)."""
    import threading

    from coral_mfg.capture.sources import FrameSlot, SourceSupervisor
    from coral_mfg.config.settings import StreamConfig
    from coral_mfg.core.events import Stamper

    calls: list[float] = []
    stop = threading.Event()

    def opener() -> Any:
        calls.append(time.monotonic())
        raise OSError("connection refused")

    config = StreamConfig("worker_safety", "rtsp://127.0.0.1:9/x", True, False, 10.0, 0)
    sup = SourceSupervisor(config, FrameSlot(threading.Condition(), leaky=True), stop,
                           opener=opener, on_end=lambda _s: None, on_event=lambda _e: None,
                           stamper=Stamper("test"))
    sup.start()
    try:
        wait_for(lambda: len(calls) >= 5, "five attempts", timeout=120)
    finally:
        stop.set()
        sup.join(10)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0  # backoff still spaces failures out
    assert all(g < 2.0 + 1.0 for g in gaps), gaps  # but never past the live cap


def test_the_disk_watched_is_the_one_the_files_go_to(tmp_path: Path) -> None:
    """A segment folder may be a disk of its own mounted there: its parent's free space
    says nothing about it."""
    from coral_mfg.outputs.encoder import RecordTarget

    assert RecordTarget(folder=tmp_path / "rec").directory == tmp_path / "rec"
    assert RecordTarget(file=tmp_path / "out.mp4").directory == tmp_path
