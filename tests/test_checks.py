"""Counting lines, dwell alarms, presence checks and the fail-safe blind state.

Lines are checked on scripted tracks (their geometry alone) and on the sample
apple video; dwell on the sample worker video; presence on a video the test
makes from real frames; the blind state on a real network camera that is
killed, and on a real inference process that hangs, seen over a real
mosquitto and in ``/api/status``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from coral_mfg.analytics.lines import place_line
from coral_mfg.config.zones import LineSpec
from tests.conftest import ROOT, frames, free_port, jsonl, video, wait_for
from tests.test_accelerator import _processes
from tests.test_cameras import APPLES, WORKER, _camera, _config, _run
from tests.test_mqtt import Broker, Subscriber
from tests.test_sources import _camera as _network_camera

#: A line across the belt of the sample apple video, which its apples cross going down.
BELT_END = {"name": "end", "points": [[0.3, 0.46], [1.0, 0.46]], "units": "relative",
            "directions": ["down", "up"]}


# --- lines on scripted tracks -----------------------------------------------------------------


def _line() -> Any:
    spec = LineSpec(name="door", points=((100.0, 300.0), (700.0, 300.0)),
                    directions=("in", "out"))
    return place_line(spec, (0, 0, 960, 540), frozenset({"person"}), "test")


def _walk(line: Any, track: int, ys: list[float], confirmed: bool = True) -> list[str]:
    out = []
    for y in ys:
        crossing = line.update("person", track, np.array([400.0, y]), confirmed)
        if crossing is not None:
            line.count(crossing.direction, None)
            out.append(crossing.direction)
    return out


@pytest.mark.parametrize(
    ("ys", "expected"),
    [
        ([200, 250, 290, 310, 350, 400], ["in"]),  # down, across: "in" (right of the line)
        ([400, 350, 310, 290, 250, 200], ["out"]),
        ([200, 280, 350, 280, 200], ["in", "out"]),  # over and back: both, once each
        # jittering on the line, within its band, then on across: once
        ([250, 297, 303, 296, 304, 298, 302, 299, 301, 340], ["in"]),
        ([250, 290, 295, 290, 260], []),  # up to the line and back: nothing
        ([260, 320, 260, 320, 260], ["in", "out", "in", "out"]),  # real crossings count
    ],
    ids=["down", "up", "and-back", "jitter", "touch", "to-and-fro"],
)
def test_a_line_counts_each_crossing_once_in_its_direction(ys: list[float],
                                                            expected: list[str]) -> None:
    assert _walk(_line(), 1, ys) == expected


def test_an_unconfirmed_track_or_a_point_beyond_the_ends_is_not_counted() -> None:
    line = _line()
    assert _walk(line, 1, [200, 400], confirmed=False) == []
    assert _walk(line, 2, [200, 400], confirmed=True) == ["in"]
    # beyond the line's ends: passing beside the door is not through it
    beside = [line.update("person", 3, np.array([900.0, y]), True) for y in (200, 400)]
    assert beside == [None, None]
    assert line.counts == {("in", None): 1}


# --- lines, dwell and presence on real video --------------------------------------------------


def test_each_apple_crosses_the_belt_line_once_with_its_grade(tmp_path: Path) -> None:
    config = _config(tmp_path, {"belt": _camera(APPLES, ["inspection"], lines=[BELT_END])})
    events, _ = _run(config, tmp_path)
    crossed = [(e["line"], e["direction"], e["label"], e["grade"], e["passed"])
               for e in events if e["type"] == "line_crossed"]
    assert crossed == [("end", "down", "apple", "fresh_apple", True),
                       ("end", "down", "apple", "rotten_apple", False)]
    graded = [e for e in events if e["type"] == "graded"]
    assert [e["track"] for e in events if e["type"] == "line_crossed"] == [
        e["track"] for e in graded]


def test_a_long_stay_raises_one_dwell_alarm(tmp_path: Path) -> None:
    """The sample worker stands in the floor zone for about two seconds of the video:
    with ``max_seconds = 1`` that is one alarm, on the video's own clock."""
    floor = {"name": "floor", "points": [[150, 400], [400, 400], [400, 480], [150, 480]],
             "max_seconds": 1.0}
    config = _config(tmp_path, {"press": _camera(WORKER, ["safety"], zones=[floor])})
    events, _ = _run(config, tmp_path)
    enter = next(e for e in events if e["type"] == "keepout_enter")
    dwell = [e for e in events if e["type"] == "zone_dwell_exceeded"]
    assert len(dwell) == 1 and dwell[0]["track"] == enter["track"]
    assert dwell[0]["max_seconds"] == 1.0 and 1.0 < dwell[0]["seconds"] < 1.5
    # at the video's 15 fps, about 15 frames after the entry
    assert 14 <= dwell[0]["frame"] - enter["frame"] <= 17
    assert dwell[0]["entered_at"] == enter["entered_at"] <= enter["timestamp"]
    assert "-press-zone_dwell_exceeded-" in dwell[0]["snapshot"]
    exits = [e for e in events if e["type"] == "keepout_exit"]
    assert all(e["entered_at"] == enter["entered_at"] for e in exits)


def _presence_clip(path: Path) -> Path:
    """The belt with the first apple on it, taken away for 2.5 s, back, hidden for 0.3 s
    (a hand passing), back again; 10 frames a second."""
    apple, empty = frames(APPLES)[20], frames(APPLES)[40]
    h, w = apple.shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (w, h))
    for image, count in ((apple, 20), (empty, 25), (apple, 20), (empty, 3), (apple, 20)):
        for _ in range(count):
            out.write(image)
    out.release()
    return path


def test_presence_reports_a_lasting_shortfall_once_and_never_a_brief_one(
    tmp_path: Path
) -> None:
    clip = _presence_clip(tmp_path / "belt.avi")
    check = {"name": "tray", "label": "apple", "expected": 1, "seconds": 1.0,
             "threshold": 0.3, "points": [[0, 0], [1, 0], [1, 1], [0, 1]],
             "units": "relative"}
    config = _config(tmp_path, {"belt": {"input": str(clip), "roles": [],
                                         "presence": [check]}})
    events, _ = _run(config, tmp_path)
    changes = [(e["type"], e["seen"], e["frame"]) for e in events
               if e["type"].startswith("presence")]
    assert [(kind, seen) for kind, seen, _ in changes] == [("presence_missing", 0),
                                                           ("presence_restored", 1)]
    # reported a second (10 frames) into each change, not before
    assert 30 <= changes[0][2] <= 32 and 55 <= changes[1][2] <= 57
    missing = next(e for e in events if e["type"] == "presence_missing")
    assert missing["expected"] == 1 and "-belt-presence_missing-" in missing["snapshot"]


# --- blind is not clear -----------------------------------------------------------------------


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return dict(json.loads(r.read()))


def _pictures(port: int, stream: str, n: int) -> list[np.ndarray]:
    """The first ``n`` pictures of a camera's MJPEG stream in the web view."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"GET /video/{stream}.mjpg HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data, found = b"", list[np.ndarray]()
        while len(found) < n:
            chunk = sock.recv(65536)
            assert chunk, "the stream ended"
            data += chunk
            while (start := data.find(b"\xff\xd8")) >= 0 and (
                    end := data.find(b"\xff\xd9", start)) >= 0:
                found.append(np.asarray(cv2.imdecode(np.frombuffer(data[start:end + 2],
                                                                   np.uint8), cv2.IMREAD_COLOR)))
                data = data[end + 2:]
    return found


def test_a_camera_that_cannot_see_is_unknown_never_clear(tmp_path: Path) -> None:
    """A network camera killed mid-run: its zone's occupancy reads ``unknown`` on MQTT and
    in the web view, the event log says ``camera_blind``; back, it reads a number again."""
    broker = Broker(tmp_path)
    broker.start()
    sub = Subscriber(broker.port)
    cam_port, http = free_port(), free_port()
    camera = _network_camera(cam_port)
    zone = tmp_path / "zone.csv"
    zone.write_text("x,y\n150,400\n400,400\n400,480\n150,480\n")
    events = tmp_path / "events.jsonl"
    app = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop",
         "--worker_safety_input", f"http://127.0.0.1:{cam_port}/stream.mjpg",
         "--keepout_points_path", str(zone), "--events", str(events),
         "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--http", f"127.0.0.1:{http}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    topic = "coral_mfg/worker_safety/zones/zone/occupancy"
    status = f"http://127.0.0.1:{http}/api/status"

    def occupancy() -> list[str]:
        return [m.payload for m in sub.all() if m.topic == topic]

    def known() -> bool:
        return bool(occupancy()) and occupancy()[-1].isdigit()

    def kinds() -> list[str]:
        return [e["type"] for e in jsonl(events)]

    try:
        wait_for(known, "a known occupancy")
        live = _pictures(http, "worker_safety", 1)[0]
        camera.kill()
        camera.wait(10)
        wait_for(lambda: occupancy()[-1] == "unknown", "occupancy unknown")
        # the web view's picture: still sent (a viewer who comes now sees one), dimmed,
        # never the old frame as if it were the floor now
        blind = _pictures(http, "worker_safety", 2)[-1]
        top = live.shape[0] * 2 // 3  # the picture, above the strip
        assert blind.shape == live.shape
        assert blind[:top].mean() < live[:top].mean() / 2
        shown = _get(status)["streams"]["worker_safety"]
        assert shown["blind"] and shown["zones"][0]["people"] is None
        assert shown["zones"][0]["name"] == "zone"
        assert "camera_blind" in kinds()
        camera = _network_camera(cam_port)
        wait_for(lambda: "camera_restored" in kinds(), "the camera back")
        wait_for(known, "a known occupancy again")
        assert _get(status)["streams"]["worker_safety"]["blind"] is None
    finally:
        # the app stops first: a camera killed while it still runs is real blindness
        app.send_signal(signal.SIGTERM)
        _, stderr = app.communicate(timeout=60)
        camera.kill()
        sub.close()
        broker.stop()
    assert app.returncode == 0, stderr
    log = [json.loads(x) for x in events.read_text().splitlines()]
    blind = next(e for e in log if e["type"] == "camera_blind")
    back = next(e for e in log if e["type"] == "camera_restored")
    assert blind["stream"] == back["stream"] == "worker_safety" and back["blind_s"] > 0
    assert "NO SIGNAL" in blind["reason"]
    # the end of the run stops the sources and processes: that is not blindness
    assert kinds().count("camera_blind") == 1


def test_a_frozen_picture_is_blind(tmp_path: Path) -> None:
    """A network camera that keeps sending the same frame, as a stuck encoder does."""
    port = free_port()
    camera = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "mjpeg_server.py"), str(video(WORKER)),
         str(port), "--frozen"], stdout=subprocess.PIPE, text=True)
    assert camera.stdout is not None and camera.stdout.readline().strip() == "ready"
    events = tmp_path / "events.jsonl"
    app = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop",
         "--worker_safety_input", f"http://127.0.0.1:{port}/stream.mjpg",
         "--frozen_seconds", "2", "--events", str(events)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def blind() -> list[dict[str, Any]]:
        return [e for e in jsonl(events) if e["type"] == "camera_blind"]

    try:
        found = wait_for(blind, "the frozen camera blind")
    finally:
        app.send_signal(signal.SIGTERM)
        _, stderr = app.communicate(timeout=60)
        camera.kill()
    assert app.returncode == 0, stderr
    assert found[0]["stream"] == "worker_safety" and "FROZEN" in found[0]["reason"]
    assert not [e for e in blind() if e["stream"] == "visual_inspection"]  # a file: exempt


def test_a_hung_inference_process_makes_its_cameras_blind_until_it_is_replaced(
    tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    http = free_port()
    app = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop",
         "--cpu_processes", "1", "--inference_timeout", "2", "--events", str(events),
         "--http", f"127.0.0.1:{http}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def log() -> list[dict[str, Any]]:
        return jsonl(events)

    try:
        wait_for(lambda: len(_processes(app.pid)) == 1
                 and sum(e["type"] == "frame" for e in log()) > 10, "frames")
        before = log()
        assert not [e for e in before if e["type"].startswith("camera_")], before[-5:]
        os.kill(_processes(app.pid)[0], signal.SIGSTOP)

        def since_stop(kind: str) -> set[str]:
            """Cameras with a ``kind`` event since the process stopped, once its loss is
            logged: whether a camera is blind by its own clock (no answer for a while) or
            the pool's (the process lost) first depends on the machine's load."""
            events = log()[len(before):]
            if not any(e["type"] == "accelerator_lost" for e in events):
                return set()
            return {e["stream"] for e in events if e["type"] == kind}

        cameras = {"worker_safety", "visual_inspection"}
        wait_for(lambda: since_stop("camera_blind") == cameras, "the loss, both cameras blind")
        wait_for(lambda: since_stop("camera_restored") == cameras, "both cameras back")
        assert _get(f"http://127.0.0.1:{http}/api/status")["streams"]["worker_safety"][
            "blind"] is None
    finally:
        app.send_signal(signal.SIGTERM)
        _, stderr = app.communicate(timeout=60)
    assert app.returncode == 0, stderr
    summary = log()[-1]
    assert summary["type"] == "summary" and summary["accelerator"]["lost"] >= 1


def test_the_same_line_given_twice_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, {"belt": _camera(APPLES, ["inspection"],
                                                lines=[BELT_END, BELT_END])})
    result = subprocess.run([sys.executable, "-m", "coral_mfg", "--config", str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the name is used twice" in result.stderr.strip().splitlines()[-1]


def test_a_presence_label_the_detector_lacks_is_refused(tmp_path: Path) -> None:
    check = {"name": "tray", "label": "bottel", "expected": 1,
             "points": [[0, 0], [1, 0], [1, 1], [0, 1]], "units": "relative"}
    config = _config(tmp_path, {"belt": {"input": str(video(APPLES)), "roles": [],
                                         "presence": [check]}})
    result = subprocess.run([sys.executable, "-m", "coral_mfg", "--config", str(config),
                             "--device", "cpu", "--headless"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "presence 'tray': 'bottel' is not a label of the detector" in last
    assert "did you mean 'bottle'" in last
