"""Failing sources: fault injection at the capture boundary, and a real network camera
killed mid-run. The other stream must go on; losses and recoveries are logged."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from coral_mfg.capture.sources import VideoSource
from coral_mfg.config.flags import resolve_settings, run_parser
from coral_mfg.core.events import Event, event_json
from coral_mfg.core.frame import Frame
from coral_mfg.outputs.base import SinkBase
from coral_mfg.runtime.builder import build_pipeline
from tests.conftest import ROOT, frames, free_port, jsonl, video

APPLES = "apple-conveyor.mp4"


class FakeSource:
    """A source that behaves well for ``good`` frames, then fails in the given way."""

    def __init__(self, fault: str, good: int = 10) -> None:
        self.fault = fault
        self.good = good
        self.reads = 0
        self.released = threading.Event()
        self.images = frames(APPLES)

    def read(self) -> tuple[bool, Any]:
        self.reads += 1
        time.sleep(0.01)
        if self.reads <= self.good:
            return True, self.images[self.reads % len(self.images)]
        if self.fault == "raises":
            raise OSError("device I/O error")
        if self.fault == "blocks":
            self.released.wait(30)  # a driver call that never returns
            return False, None
        if self.fault == "garbage":
            return True, b"\x00garbage"
        if self.fault == "odd-size":
            return True, np.full((7 + self.reads % 5, 13, 3), 128, np.uint8)
        if self.fault == "ends":
            return False, None
        raise AssertionError(self.fault)

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: 30.0}.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        return True

    def release(self) -> None:
        self.released.set()


def _opener(fault: str) -> Any:
    opened: list[FakeSource] = []

    def open_source() -> tuple[VideoSource, Frame | None]:
        source = FakeSource(fault, good=10)  # each reopened source works, then fails again
        opened.append(source)
        return source, None

    open_source.opened = opened  # type: ignore[attr-defined]
    return open_source


class _Events(SinkBase):
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.frames: dict[str, int] = {}

    def event(self, event: Event) -> None:
        self.records.append(event_json(event))

    def write(self, result: Any) -> None:
        self.frames[result.stream] = self.frames.get(result.stream, 0) + 1


@pytest.mark.parametrize("fault", ["raises", "blocks", "garbage", "ends"])
def test_faulty_source_is_lost_and_restored_while_the_other_goes_on(fault: str) -> None:
    settings = resolve_settings(run_parser().parse_args(
        ["--headless", "--device", "cpu", "--no-realtime", "--loop",
         "--visual_inspection_input", "fake://camera", "--stall_seconds", "0.5"]))
    sink = _Events()
    opener = _opener(fault)
    pipeline = build_pipeline(settings, extra_sinks=[sink],
                              openers={"visual_inspection": opener})
    pipeline.start()
    try:
        # wait for the loss and the recovery, and for the worker stream to move on past both
        deadline = time.monotonic() + 60
        at_loss: int | None = None
        while time.monotonic() < deadline:
            pipeline.poll(0.1)
            kinds = [r["type"] for r in sink.records]
            if at_loss is None and "source_lost" in kinds:
                at_loss = pipeline.units["worker_safety"].processor.processed
            if (at_loss is not None and "source_restored" in kinds
                    and pipeline.units["worker_safety"].processor.processed > at_loss + 5
                    and sink.frames.get("visual_inspection", 0) >= 10):
                break
        status_seen = pipeline.assemble_status().stream("visual_inspection").reason
        at_end = pipeline.units["worker_safety"].processor.processed
    finally:
        summary = pipeline.close()
    kinds = [(r["type"], r["stream"]) for r in sink.records]
    assert ("source_lost", "visual_inspection") in kinds
    assert ("source_restored", "visual_inspection") in kinds
    lost = next(r for r in sink.records if r["type"] == "source_lost")
    assert lost["reason"] and "time" in lost
    assert len(opener.opened) >= 2  # reopened after the loss
    # the worker-safety stream kept going through the loss
    assert at_loss is not None and at_end > at_loss + 5
    assert summary["source_lost"]["visual_inspection"] >= 1
    assert summary["source_lost"]["worker_safety"] == 0
    assert sink.frames.get("visual_inspection", 0) >= 10
    assert status_seen is None or status_seen.startswith("NO SIGNAL")


def test_odd_sized_frames_are_processed() -> None:
    settings = resolve_settings(run_parser().parse_args(
        ["--headless", "--device", "cpu", "--no-realtime", "--max_frames", "30",
         "--visual_inspection_input", "fake://camera"]))
    sink = _Events()
    pipeline = build_pipeline(settings, extra_sinks=[sink],
                              openers={"visual_inspection": _opener("odd-size")})
    pipeline.start()
    try:
        deadline = time.monotonic() + 20
        while not pipeline.poll(0.2) and time.monotonic() < deadline:
            pass
    finally:
        summary = pipeline.close()
    assert summary["frames"]["visual_inspection"] == 30
    assert summary["errors"]["visual_inspection"] == 0
    assert not [r for r in sink.records if r["type"] == "source_lost"]




def _camera(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "mjpeg_server.py"),
         str(video("worker-zone-detection.mp4")), str(port)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc



def _wait_for(path: Path, check: Any, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = jsonl(path)
        if check(events):
            return events
        time.sleep(0.2)
    raise AssertionError(f"timed out; last events: {jsonl(path)[-3:]}")


def test_network_camera_killed_and_back(tmp_path: Path) -> None:
    """No mocks: a local MJPEG camera dies mid-run and comes back on the same port."""
    port = free_port()
    camera = _camera(port)
    events = tmp_path / "events.jsonl"
    app = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop",
         "--worker_safety_input", f"http://127.0.0.1:{port}/stream.mjpg",
         "--events", str(events)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        def ws_frames(ev: list[dict[str, Any]]) -> int:
            return sum(1 for e in ev if e.get("stream") == "worker_safety"
                       and e["type"] == "frame")

        def vi_frames(ev: list[dict[str, Any]]) -> int:
            return sum(1 for e in ev if e.get("stream") == "visual_inspection"
                       and e["type"] == "frame")

        _wait_for(events, lambda ev: ws_frames(ev) >= 10, 60)
        camera.kill()
        camera.wait(10)
        lost = _wait_for(events, lambda ev: any(e["type"] == "source_lost" for e in ev), 20)
        vi_at_loss = vi_frames(lost)
        time.sleep(1.5)
        camera = _camera(port)
        back = _wait_for(events, lambda ev: any(e["type"] == "source_restored" for e in ev), 40)
        # the apple stream never stopped while the camera was away
        assert vi_frames(back) > vi_at_loss + 10
        _wait_for(events, lambda ev: ws_frames(ev) > ws_frames(back) + 5, 30)
    finally:
        app.send_signal(signal.SIGTERM)
        _, stderr = app.communicate(timeout=30)
        camera.kill()
        camera.wait(10)
    assert app.returncode == 0, stderr
    final = jsonl(events)
    lost_event = next(e for e in final if e["type"] == "source_lost")
    assert lost_event["stream"] == "worker_safety"
    assert "disconnected" in lost_event["reason"]
    assert final[-1]["type"] == "summary"
    assert final[-1]["source_lost"] == {"worker_safety": 1, "visual_inspection": 0}


class _ShortFile:
    """A real decoded file of three frames at 10 fps, rewound as OpenCV rewinds."""

    def __init__(self) -> None:
        self.images = frames("worker-zone-detection.mp4")[:3]
        self.pos = 0

    def read(self) -> tuple[bool, Any]:
        if self.pos >= len(self.images):
            return False, None
        self.pos += 1
        return True, self.images[self.pos - 1].copy()

    def get(self, prop: int) -> float:
        return 10.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def set(self, prop: int, value: float) -> bool:
        self.pos = int(value)
        return True

    def release(self) -> None:
        pass


def test_a_paced_loop_keeps_its_cadence_across_the_wrap() -> None:
    """The first frame of a new pass is due one frame interval after the last one, so a
    leaky hand-off never replaces the last frame of a pass. Frames are due on a schedule
    that starts when the reader is made, so no frame comes before ``made + k``
    intervals (a lower bound: a slow machine only delays frames; a late frame may be
    followed by one on time, so the gaps between two frames bound nothing)."""
    from coral_mfg.capture.sources import CaptureThread, FrameSlot

    cond, stop = threading.Condition(), threading.Event()
    slot = FrameSlot(cond, leaky=True)
    made = time.monotonic()
    reader = CaptureThread("worker_safety", "x.mp4", _ShortFile(), slot, stop,
                           realtime=True, loop=True)
    taken: list[Frame] = []
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(taken) < 7 and time.monotonic() < deadline:
            with cond:
                frame = slot.take()
                if frame is None:
                    cond.wait(0.05)
            if frame is not None:
                taken.append(frame)
    finally:
        stop.set()
        reader.join(5)
    assert [f.index for f in taken[:7]] == [0, 1, 2, 0, 1, 2, 0]
    early = [(k, round(made + 0.1 * k - f.captured, 4)) for k, f in enumerate(taken[:7])
             if f.captured < made + 0.1 * k - 0.001]
    assert not early, early  # every frame, wrap included, on or after its due time
    assert slot.dropped == 0
