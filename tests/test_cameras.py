"""A station of any size: cameras from ``[cameras.NAME]`` tables, each with its own roles,
zones and checks; every output per camera; the motion gate and the ``detect_fps`` cap.

Real models, real frames: the sample videos, and videos the tests make from their
frames. MQTT goes to Debian's mosquitto on a free loopback port.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tomli_w

from coral_mfg.config.flags import resolve_settings, run_parser
from coral_mfg.core.errors import UserError
from coral_mfg.core.events import KeepoutEnter
from coral_mfg.core.results import FrameResult, PersonObject
from coral_mfg.outputs.base import SinkBase
from coral_mfg.runtime.builder import build_pipeline
from tests.conftest import ROOT, frames, free_port, jsonl, video, wait_for
from tests.test_mqtt import Broker, Subscriber

APP = [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu"]
#: A floor zone the sample's worker walks into (pixels of a 960x540 frame).
FLOOR = {"name": "floor", "points": [[150, 400], [400, 400], [400, 480], [150, 480]]}
WORKER, APPLES = "worker-zone-detection.mp4", "apple-conveyor.mp4"


def _config(tmp: Path, cameras: dict[str, dict[str, Any]], **top: Any) -> Path:
    path = tmp / "station.toml"
    path.write_text(tomli_w.dumps({**top, "cameras": cameras}), encoding="utf-8")
    return path


def _camera(name: str, roles: list[str], **more: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"input": str(video(name)), "roles": roles, **more}
    if "safety" in roles:
        table.setdefault("zones", [FLOOR])
    return table



def _run(config: Path, tmp: Path, *extra: str) -> tuple[list[dict[str, Any]], str]:
    events = tmp / "events.jsonl"
    result = subprocess.run([*APP, "--config", str(config), "--no-realtime", "--events",
                             str(events), *extra], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return jsonl(events), result.stderr


# --- stations of one camera -------------------------------------------------------------------


def test_a_safety_only_station_of_one_camera(tmp_path: Path) -> None:
    config = _config(tmp_path, {"press": _camera(WORKER, ["safety"])})
    events, stderr = _run(config, tmp_path)
    summary = events[-1]
    assert summary["frames"] == {"press": len(frames(WORKER))}
    assert summary["cameras"] == {"press": {"roles": ["safety"], "inspected": {},
                                            "violations_by_zone": {"floor": 1}}}
    entries = [e for e in events if e["type"] == "keepout_enter"]
    assert [(e["stream"], e["zone"]) for e in entries] == [("press", "floor")]
    assert "-press-keepout_enter-" in entries[0]["snapshot"]
    assert not [e for e in events if e["type"] == "graded"]
    assert {e["stream"] for e in events if "stream" in e} == {"press"}
    assert "visual_inspection" not in stderr and "worker_safety" not in stderr


def test_an_inspection_only_station_of_one_camera(tmp_path: Path) -> None:
    config = _config(tmp_path, {"belt": _camera(APPLES, ["inspection"])})
    events, _ = _run(config, tmp_path, "--snapshot_graded")
    summary = events[-1]
    assert set(summary["frames"]) == {"belt"} and summary["keepout_violations"] == 0
    graded = [e for e in events if e["type"] == "graded"]
    assert graded and {e["stream"] for e in graded} == {"belt"}
    assert {"fresh_apple", "rotten_apple"} <= {e["grade"] for e in graded}
    assert summary["cameras"]["belt"]["inspected"] == summary["inspected"]
    assert all("-belt-graded-" in e["snapshot"] for e in graded)
    assert not [e for e in events if e["type"].startswith(("keepout", "zones"))]


# --- three cameras, mixed roles ---------------------------------------------------------------


def test_three_cameras_with_mixed_roles(tmp_path: Path) -> None:
    """Events, zones, MQTT topics, metrics and recordings, each per camera: two cameras
    watch the same floor with a zone of the same name, the third grades apples."""
    broker = Broker(tmp_path)
    broker.start()
    sub = Subscriber(broker.port)
    port = free_port()
    config = _config(tmp_path, {
        "press": _camera(WORKER, ["safety"]),
        "belt": _camera(APPLES, ["inspection"], pass_grades=["fresh_apple"]),
        "dock": _camera(WORKER, ["safety", "inspection"], worker_threshold=0.5),
    })
    events, rec = tmp_path / "events.jsonl", tmp_path / "rec"
    proc = subprocess.Popen(
        [*APP, "--config", str(config), "--loop", "--events", str(events), "--mqtt",
         f"mqtt://127.0.0.1:{broker.port}", "--http", f"127.0.0.1:{port}", "--record_dir",
         str(rec)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def payloads(topic: str) -> list[str]:
        return [m.payload for m in sub.all() if m.topic == topic]

    try:
        wait_for(sub.client.is_connected, "the subscriber")
        wait_for(lambda: "1" in payloads("coral_mfg/press/zones/floor/occupancy")
                 and "1" in payloads("coral_mfg/dock/zones/floor/occupancy")
                 and payloads("coral_mfg/belt/inspection/counts"), "each camera's topics")
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            metrics = r.read().decode()
        with urllib.request.urlopen(base + "/api/status", timeout=10) as r:
            status = json.loads(r.read())
        with urllib.request.urlopen(base + "/", timeout=10) as r:
            page = r.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
        sub.close()
        broker.stop()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    cameras = {"press", "belt", "dock"}

    log = jsonl(events)
    enters = {(e["stream"], e["zone"]) for e in log if e["type"] == "keepout_enter"}
    assert enters == {("press", "floor"), ("dock", "floor")}
    assert {e["stream"] for e in log if e["type"] == "graded"} == {"belt"}
    assert {e["stream"] for e in log if e["type"] == "frame"} == cameras
    summary = log[-1]
    assert set(summary["cameras"]) == cameras
    assert summary["cameras"]["dock"]["roles"] == ["safety", "inspection"]
    assert summary["keepout_violations"] == sum(
        sum(c["violations_by_zone"].values()) for c in summary["cameras"].values())

    topics = {m.topic for m in sub.all()}
    assert {f"coral_mfg/{c}/state" for c in cameras} <= topics
    assert "coral_mfg/belt/zones/floor/occupancy" not in topics
    assert not [t for t in topics if t.startswith("coral_mfg/zones/")]
    mqtt_events = [json.loads(m.payload) for m in sub.all() if m.topic == "coral_mfg/events"]
    assert {e["stream"] for e in mqtt_events if e["type"] == "keepout_enter"} == {"press",
                                                                                  "dock"}

    for camera in cameras:
        assert f'coral_mfg_frames_total{{stream="{camera}"}}' in metrics
        assert f'coral_mfg_skipped_frames_total{{stream="{camera}"}} 0.0' in metrics
        assert f'id="video-{camera}"' in page
    for camera in ("press", "dock"):
        assert f'coral_mfg_zone_people{{stream="{camera}",zone="floor"}}' in metrics
    assert 'coral_mfg_inspected_total{grade="fresh_apple",stream="belt"}' in metrics
    assert set(status["streams"]) == cameras
    assert status["streams"]["belt"]["zones"] == []
    assert [z["name"] for z in status["streams"]["dock"]["zones"]] == ["floor"]

    for camera in cameras:
        files = sorted((rec / camera).glob("*.mp4"))
        assert files, camera
        cap = cv2.VideoCapture(str(files[0]))
        ok, first = cap.read()
        cap.release()
        assert ok and first.shape == (612, 960, 3)  # the picture and its strip


# --- the config, checked ----------------------------------------------------------------------


def _nine() -> dict[str, Any]:
    return {f"c{i}": _camera(APPLES, ["inspection"]) for i in range(9)}


@pytest.mark.parametrize(
    ("cameras", "top", "flags", "message"),
    [
        (_nine, {}, [], "a station has 1 to 8 cameras, the file defines 9"),
        (lambda: {"press": {"input": "x.mp4", "roles": ["safety"]}}, {}, [],
         "[cameras.press] has the safety role but no keep-out zones"),
        (lambda: {"press": {"input": "x.mp4", "role": ["safety"]}}, {}, [],
         "unknown key 'role' (did you mean roles?)"),
        (lambda: {"press": {"input": "x.mp4", "roles": ["welding"]}}, {}, [],
         "'roles' must be a list of roles"),
        (lambda: {"belt": {"input": "x.mp4", "roles": ["inspection"], "enabled": False}}, {},
         [], "every camera has enabled = false"),
        (lambda: {"belt": {"input": "x.mp4", "roles": ["inspection"]}}, {},
         ["--worker_safety_input", "a.mp4"], "defines [cameras], so 'worker_safety_input'"),
        (lambda: {"bad/name": {"input": "x.mp4", "roles": ["inspection"]}}, {}, [],
         "bad/name"),
    ],
    ids=["nine", "safety-without-zones", "misspelt", "unknown-role", "all-disabled",
         "legacy-flag", "name"],
)
def test_a_bad_camera_table_is_refused_in_one_line(
    tmp_path: Path, cameras: Any, top: dict[str, Any], flags: list[str], message: str
) -> None:
    config = _config(tmp_path, cameras(), **top)
    with pytest.raises(UserError) as caught:
        resolve_settings(run_parser().parse_args(["--config", str(config), *flags]))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_cli_says_what_is_wrong_with_a_camera_and_exits_2(tmp_path: Path) -> None:
    config = _config(tmp_path, {"press": {"input": "x.mp4", "roles": ["safety"]}})
    result = subprocess.run([*APP, "--config", str(config)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "add [[cameras.press.zones]] tables" in result.stderr.strip().splitlines()[-1]


def test_a_camera_may_name_its_own_labels_and_its_unknown_label_is_refused(
    tmp_path: Path
) -> None:
    config = _config(tmp_path, {"belt": _camera(APPLES, ["inspection"],
                                                inspect_labels=["bananna"])})
    settings = resolve_settings(run_parser().parse_args(["--config", str(config),
                                                         "--device", "cpu"]))
    with pytest.raises(UserError) as caught:
        build_pipeline(settings).close()
    assert "camera belt" in str(caught.value) and "banana" in str(caught.value)


# --- the motion gate and the detect_fps cap ---------------------------------------------------


class _Results(SinkBase):
    def __init__(self) -> None:
        self.results: list[FrameResult] = []

    def write(self, result: FrameResult) -> None:
        self.results.append(result)


def _write_video(path: Path, images: list[np.ndarray], fps: float = 15.0) -> Path:
    h, w = images[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    for image in images:
        out.write(image)
    out.release()
    return path


def _empty_floor() -> np.ndarray:
    """The worker video's floor with nobody on it: its first frame, the worker (lower
    right) painted over with the same floor from its last frame (the worker is upper
    left by then)."""
    first, last = frames(WORKER)[0], frames(WORKER)[-1]
    floor = first.copy()
    floor[140:, 190:360] = last[140:, 190:360]
    return floor


def _run_pipeline(settings: Any) -> tuple[list[FrameResult], dict[str, Any]]:
    sink = _Results()
    pipeline = build_pipeline(settings, extra_sinks=[sink])
    pipeline.start()
    try:
        wait_for(lambda: pipeline.poll(0.1), "the end of the video", timeout=300)
    finally:
        summary = pipeline.close()
    return sink.results, summary


def test_the_motion_gate_skips_a_still_scene_and_sees_a_person_step_in(tmp_path: Path
                                                                        ) -> None:
    still, person = _empty_floor(), frames(WORKER)[10]
    clip = _write_video(tmp_path / "still.avi", [still] * 40 + [person] * 20)
    config = _config(tmp_path, {"floor": {
        "input": str(clip), "roles": ["safety"], "zones": [FLOOR], "motion_gate": True,
        "motion_recheck_seconds": 3600.0}})
    settings = resolve_settings(run_parser().parse_args(
        ["--config", str(config), "--device", "cpu", "--no-realtime", "--headless"]))
    results, summary = _run_pipeline(settings)
    people = {r.frame.index: [o for o in r.objects if isinstance(o, PersonObject)]
              for r in results}
    assert len(people) == 60
    assert not any(people[i] for i in range(40))  # the empty floor: nobody
    assert people[40], "the person is seen on the first frame with motion"
    assert all(people[i] for i in range(41, 60))  # held while nothing moves
    # detected on the first frame and on the step; every other frame held, and counted
    assert summary["skipped"] == {"floor": 58}
    assert summary["frames"] == {"floor": 60}


def test_without_the_gate_every_frame_is_detected_on(tmp_path: Path) -> None:
    clip = _write_video(tmp_path / "still.avi", [_empty_floor()] * 30)
    config = _config(tmp_path, {"floor": {"input": str(clip), "roles": ["safety"],
                                          "zones": [FLOOR]}})
    settings = resolve_settings(run_parser().parse_args(
        ["--config", str(config), "--device", "cpu", "--no-realtime", "--headless"]))
    _, summary = _run_pipeline(settings)
    assert summary["skipped"] == {"floor": 0} and summary["frames"] == {"floor": 30}


def test_the_gate_misses_no_keepout_entry_on_the_worker_video(tmp_path: Path) -> None:
    def entries(gate: bool) -> list[tuple[str, int]]:
        config = _config(tmp_path, {"press": _camera(WORKER, ["safety"], motion_gate=gate)})
        settings = resolve_settings(run_parser().parse_args(
            ["--config", str(config), "--device", "cpu", "--no-realtime", "--headless"]))
        results, _ = _run_pipeline(settings)
        return [(e.zone, r.frame.index) for r in results for e in r.events
                if isinstance(e, KeepoutEnter)]

    gated, every = entries(gate=True), entries(gate=False)
    assert every and [z for z, _ in gated] == [z for z, _ in every]
    # the same entries, each at most a few frames (0.2 s at 15 fps) apart
    assert all(abs(a - b) <= 3 for (_, a), (_, b) in zip(gated, every, strict=True))


def test_detect_fps_caps_detections_by_the_capture_clock(tmp_path: Path) -> None:
    """At the video's own pace (15 fps), a 5 fps cap detects on about one frame in three;
    the frames between are held (their objects the last detection's) and counted."""
    config = _config(tmp_path, {"press": _camera(WORKER, ["safety"], detect_fps=5.0)})
    settings = resolve_settings(run_parser().parse_args(
        ["--config", str(config), "--device", "cpu", "--headless"]))
    results, summary = _run_pipeline(settings)
    n = len(frames(WORKER))
    assert summary["frames"] == {"press": n}
    detected = n - summary["skipped"]["press"]
    span = (results[-1].frame.captured - results[0].frame.captured)
    assert detected <= span * 5.0 + 1
    assert detected >= 2


def test_bench_replicates_the_samples_to_n_cameras() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coral_mfg", "bench", "--cameras", "3", "--seconds", "3",
         "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=600,
        check=False)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    names = {"worker_safety_1", "visual_inspection_1", "worker_safety_2"}
    assert figures["cameras"] == 3 and set(figures["fps"]) == names
    assert set(figures["skipped"]) == names
    assert figures["total_fps"] > 0 and figures["bound_fps"] > 0 and figures["ratio"] > 0
    # measured in the steady state: every file came round (its first pass decoded, timed
    # on its own), then rounds of the pipeline, each with a slice of the bound beside it
    assert set(figures["first_pass_decode_ms"]) == names
    assert all(ms > 0 for ms in figures["first_pass_decode_ms"].values())
    assert len(figures["rounds"]) == 2
    assert all(r["fps"] > 0 and r["bound_fps"] > 0 for r in figures["rounds"])
    assert figures["pipeline_cpu"]["ms_per_frame"] > 0
    assert all(0 < d["busy_share"] <= 1 for d in figures["devices"])


# --- a camera's own classifier ----------------------------------------------------------------


def test_a_camera_grades_with_its_own_classifier_and_labels(tmp_path: Path) -> None:
    """The second belt grades with a classifier of its own (here the same network under
    other grade names, so both cameras must agree object by object)."""
    from tests.conftest import model

    own = tmp_path / "own"
    own.mkdir()
    (own / "belt.tflite").write_bytes(model("classifier.tflite").read_bytes())
    (own / "classifier_labels.txt").write_text("good\nbad\n")
    config = _config(tmp_path, {
        "belt_a": _camera(APPLES, ["inspection"]),
        "belt_b": _camera(APPLES, ["inspection"], classifier_model=str(own / "belt.tflite"),
                          pass_grades=["good"]),
    })
    events, stderr = _run(config, tmp_path)
    assert "camera classifier belt.tflite on cpu" in stderr
    graded = {c: [(e["track"], e["grade"], e["passed"]) for e in events
                  if e["type"] == "graded" and e["stream"] == c] for c in ("belt_a", "belt_b")}
    names = {"fresh_apple": "good", "rotten_apple": "bad"}
    assert graded["belt_a"] and [(t, names[g], p) for t, g, p in graded["belt_a"]] == \
        graded["belt_b"]
    summary = events[-1]
    assert set(summary["cameras"]["belt_b"]["inspected"]) <= {"good", "bad"}


@pytest.mark.parametrize(
    ("labels", "words"),
    [(None, ("[cameras.belt]: no classifier_labels set", "set classifier_labels")),
     ("0 bruised\n1 good\n", ("[cameras.belt]: pass_grades: name the grade(s) that pass",
                               "(bruised, good)"))],
    ids=["no-labels", "no-passing-grades"],
)
def test_a_camera_classifier_without_its_labels_or_passing_grades_is_refused(
        tmp_path: Path, labels: str | None, words: tuple[str, str]) -> None:
    """Its grades are its own: never the bundled ones, and the station's passing grades do
    not name them, nor is its first grade (by name, ``bruised``) a safe default."""
    from tests.conftest import model

    (tmp_path / "belt.tflite").write_bytes(model("classifier.tflite").read_bytes())
    if labels is not None:
        (tmp_path / "classifier_labels.txt").write_text(labels)
    config = _config(tmp_path, {"belt": _camera(
        APPLES, ["inspection"], classifier_model=str(tmp_path / "belt.tflite"))})
    result = subprocess.run([*APP, "--config", str(config)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert all(w in last for w in words), last


def test_crop_slots_serve_classifiers_of_every_input_size() -> None:
    from coral_mfg.inference.protocol import CROP_SLOTS, LANES, InputArena

    arena = InputArena.create((300, 300), (224, 224))
    try:
        small = arena.crops_at((96, 128))
        assert small.shape == (LANES, CROP_SLOTS, 128, 96, 3)
        small[1, 3] = 7  # the same memory as the crop slots, never the detector's
        assert int(arena.detector.sum()) == 0 and int(arena.crops.sum()) > 0
        with pytest.raises(AssertionError):
            arena.crops_at((320, 320))
    finally:
        del small
        arena.close()
