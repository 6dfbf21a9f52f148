"""Teach it from good parts only: train-anomaly on crops the application harvests, then run.

The good crops are those of the first (fresh) apple of the sample video, as the
application harvests them; the model is trained by the command, with TensorFlow
made unimportable to show it needs none, and run by the application on the
whole video. Defects are painted on crops of that apple: dark spots, a cut, a
missing piece. Real models, real frames, no mocked inference.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import tomli_w

from tests.conftest import ROOT, free_port, jsonl, video, wait_for
from tests.test_mqtt import Broker, Subscriber

APP = [sys.executable, "-m", "coral_mfg"]
FRAME = re.compile(r"_f(\d+)_t(\d+)_")
#: the sample video (724x400) fitted into the 960x540 pane: its picture's rows
PICTURE_TOP, PICTURE_BOTTOM, PANE_WIDTH = 5, 535, 960
EDGE_PX = 5


def _cli(*args: str, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*APP, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})})


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if "error: " in ln]
    assert len(errors) == 1, result.stderr
    return errors[0]



# --- the good crops, as the application harvests them -----------------------------------------


class Harvest:
    """The first apple's crops, by frame, and which frames show it whole."""

    def __init__(self, folder: Path, events: list[dict[str, Any]]) -> None:
        self.crops = {int(m.group(1)): p for p in sorted(folder.rglob("*.jpg"))
                      if (m := FRAME.search(p.name)) and m.group(2) == "1"}
        boxes = {r["frame"]: o["box"] for r in events if r["type"] == "frame"
                 and r["stream"] == "visual_inspection" for o in r["objects"]
                 if o["track"] == 1 and not o["predicted"]}
        #: frames where the apple lies inside the picture, clear of its edges
        self.whole = sorted(f for f in self.crops if f in boxes
                            and boxes[f][1] > PICTURE_TOP + EDGE_PX
                            and boxes[f][3] < PICTURE_BOTTOM - EDGE_PX
                            and boxes[f][2] < PANE_WIDTH - EDGE_PX)


@pytest.fixture(scope="module")
def harvest(tmp_path_factory: pytest.TempPathFactory) -> Harvest:
    folder = tmp_path_factory.mktemp("harvest")
    events = tmp_path_factory.mktemp("harvest-events") / "events.jsonl"
    run = _cli("--headless", "--device", "cpu", "--no-realtime", "--harvest_dir", str(folder),
               "--events", str(events))
    assert run.returncode == 0, run.stderr
    found = Harvest(folder, jsonl(events))
    assert len(found.crops) >= 20 and len(found.whole) >= 4, (found.crops, found.whole)
    return found


def _no_tensorflow(tmp: Path) -> dict[str, str]:
    """An environment in which importing TensorFlow fails."""
    blocker = tmp / "block"
    blocker.mkdir(exist_ok=True)
    (blocker / "tensorflow.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'tensorflow'\", name='tensorflow')\n")
    return {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def trained(harvest: Harvest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Every crop of the first apple, plus one torn file, trained without TensorFlow."""
    good = tmp_path_factory.mktemp("good")
    for path in harvest.crops.values():
        shutil.copy(path, good / path.name)
    (good / "torn.jpg").write_bytes(b"\xff\xd8\xff\xe0 torn off")
    out = tmp_path_factory.mktemp("model")
    result = _cli("train-anomaly", str(good), "--out", str(out),
                  env=_no_tensorflow(tmp_path_factory.mktemp("env")))
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


# --- training and its report ------------------------------------------------------------------


def test_training_needs_no_tensorflow_and_reports_what_it_learnt(
        harvest: Harvest, trained: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, result = trained
    report = json.loads((out / "report.json").read_text())
    crops = len(harvest.crops)
    assert report["images"] == {"found": crops + 1, "unreadable": 1, "duplicates": 0,
                                "used": crops,
                                "unreadable_files": [str(Path(report["good_dir"]) /
                                                         "torn.jpg")]}
    assert "skipped 1 unreadable image(s)" in result.stdout
    assert f"embedding {crops + 1} good crops: {crops + 1}/{crops + 1}" in result.stdout
    assert report["method"] == "gaussian"
    assert report["extractor"]["file"] == "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
    assert report["extractor"]["dims"] == 1024
    cal = report["calibration"]
    assert cal["false_alarm_rate"] == 0.005 and cal["held_out"] == crops
    assert cal["held_out_false_alarm_rate"] <= 0.005
    assert cal["threshold"] == pytest.approx(report["scores"]["held_out"]["max"], rel=1e-4), (
        "fewer held-out crops than 1 / rate: the threshold is the largest of their distances")
    histogram = report["histogram"]
    assert len(histogram["edges"]) == len(histogram["training"]) + 1
    assert sum(histogram["training"]) == sum(histogram["held_out"]) == crops
    assert histogram["edges"][-1] >= cal["threshold"]
    assert report["scores"]["training"]["max"] < report["scores"]["held_out"]["min"]
    assert report["run_command"] == f"coral-mfg --anomaly {out}"
    model = json.loads((out / "anomaly.json").read_text())
    assert model["format"] == 1 and model["threshold"] == pytest.approx(cal["threshold"])
    png = cv2.imread(str(out / "scores.png"))
    assert png is not None and png.shape == (480, 900, 3) and png.std() > 10
    # the threshold is drawn in its own red
    assert int(np.sum(np.all(png == (40, 40, 220), axis=2))) > 100
    text = (out / "report.md").read_text()
    assert f"0 of {crops}" in text and "coral-mfg --anomaly" in text
    assert report["seconds"]["total"] < 120


# --- a run: the rotten apple is flagged, the fresh one is not ---------------------------------


@pytest.fixture(scope="module")
def station_run(trained: tuple[Path, subprocess.CompletedProcess[str]],
                tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    """Two belts on the sample video: one grades and scores anomalies (the station's
    --anomaly), the other has no classifier and a model of its own."""
    out = trained[0]
    tmp = tmp_path_factory.mktemp("run")
    apples = str(video("apple-conveyor.mp4"))
    config = tmp / "station.toml"
    config.write_text(tomli_w.dumps({"cameras": {
        "graded": {"input": apples, "roles": ["inspection"]},
        "plain": {"input": apples, "roles": ["inspection"], "classify": False,
                  "anomaly": str(out)},
    }}))
    events = tmp / "events.jsonl"
    run = _cli("--headless", "--device", "cpu", "--no-realtime", "--config", str(config),
               "--anomaly", str(out), "--events", str(events), "--snapshot_dir",
               str(tmp / "snapshots"))
    assert run.returncode == 0, run.stderr
    assert "embedding extractor mobilenet_v1_1.0_224_quant_embedding_extractor.tflite on cpu" \
        in run.stderr
    return jsonl(events), tmp / "snapshots"


def _graded(events: list[dict[str, Any]], camera: str) -> dict[int, dict[str, Any]]:
    return {e["track"]: e for e in events if e["type"] == "graded" and e["stream"] == camera}


def test_a_run_flags_the_rotten_apple_and_not_the_fresh_one(
        station_run: tuple[list[dict[str, Any]], Path]) -> None:
    events, snapshots = station_run
    graded = _graded(events, "graded")
    assert [(e["grade"], e["anomalous"], e["passed"]) for e in graded.values()] == [
        ("fresh_apple", False, True), ("rotten_apple", True, False)]
    fresh, rotten = graded.values()
    assert fresh["anomaly_score"] < 0.8 and rotten["anomaly_score"] > 1.2
    assert rotten["snapshot"].endswith(".jpg") and "-anomalous-" in rotten["snapshot"]
    assert Path(rotten["snapshot"]).is_file()
    assert Path(rotten["snapshot"].replace(".jpg", "-crop.jpg")).is_file()
    assert "snapshot" not in fresh  # snapshot_graded is off: only the anomalous one
    assert sorted(p.name.split("-")[2] for p in snapshots.glob("*-crop.jpg")) == [
        "anomalous", "anomalous"]
    summary = events[-1]
    assert summary["cameras"]["graded"]["inspected"] == {
        "fresh_apple": 1, "rotten_apple": 1, "anomalous": 1}


def test_without_a_classifier_the_verdict_is_normal_or_anomalous(
        station_run: tuple[list[dict[str, Any]], Path]) -> None:
    events, _ = station_run
    plain = _graded(events, "plain")
    assert [(e["grade"], e["anomalous"], e["passed"]) for e in plain.values()] == [
        ("normal", False, True), ("anomalous", True, False)]
    for e in plain.values():
        assert e["grade_score"] == e["anomaly_score"]
        assert e["graded_frames"] >= 5  # the extractor on every 3rd frame on the CPU
    assert events[-1]["cameras"]["plain"]["inspected"] == {"normal": 1, "anomalous": 1}


def test_frame_objects_carry_the_running_anomaly_verdict(
        station_run: tuple[list[dict[str, Any]], Path]) -> None:
    events, _ = station_run
    objects = [o for r in events if r["type"] == "frame" and r["stream"] == "graded"
               for o in r["objects"]]
    scored = [o for o in objects if "anomaly_score" in o]
    assert len(scored) >= 30 and all(o["anomalous"] == (o["anomaly_score"] > 1.0)
                                     for o in scored)
    last = {o["track"]: o for o in scored}
    assert last[1]["anomalous"] is False and last[2]["anomalous"] is True


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    return json.loads(body) if url.split("/")[3] == "api" else body


def test_mqtt_the_web_view_and_metrics_carry_the_verdicts(
        trained: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    """A looping run with a broker and the web view: the graded events published and served
    carry the anomaly score and verdict, and the counts (retained topics, /api/status, the
    page's, the HUD's, /metrics) count the anomalous object."""
    broker = Broker(tmp_path)
    broker.start()
    subscriber = Subscriber(broker.port)
    port = free_port()
    proc = subprocess.Popen(
        [*APP, "--headless", "--device", "cpu", "--loop", "--anomaly", str(trained[0]),
         "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--http", f"127.0.0.1:{port}",
         "--events", str(tmp_path / "events.jsonl"), "--snapshot_dir", str(tmp_path / "s")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def graded() -> list[dict[str, Any]]:
            return [e for e in subscriber.events() if e["type"] == "graded"]

        wait_for(lambda: len(graded()) >= 2, "two graded events on the broker", timeout=120)
        status = _get(f"{base}/api/status")
        served = [e for e in _get(f"{base}/api/events") if e["type"] == "graded"]
        page = _get(base + "/")
        metrics = _get(f"{base}/metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        subscriber.close()
        broker.stop()
    assert proc.returncode == 0, stderr
    fresh, rotten = graded()[:2]
    assert (fresh["grade"], fresh["anomalous"], rotten["grade"], rotten["anomalous"]) == (
        "fresh_apple", False, "rotten_apple", True)
    assert fresh["anomaly_score"] < 0.8 and rotten["anomaly_score"] > 1.2
    assert [(e["id"], e["anomaly_score"]) for e in served[:2]] == [
        (e["id"], e["anomaly_score"]) for e in (fresh, rotten)]
    counts = [json.loads(m.payload) for m in subscriber.all()
              if m.topic == "coral_mfg/visual_inspection/inspection/counts"]
    assert counts[-1]["anomalous"] >= 1 and counts[-1]["rotten_apple"] >= 1
    station = [json.loads(m.payload) for m in subscriber.all()
               if m.topic == "coral_mfg/inspection/counts"]
    assert station[-1]["anomalous"] >= 1
    assert status["streams"]["visual_inspection"]["counts"]["anomalous"] >= 1
    assert status["counts"]["anomalous"] >= 1
    assert "ANOMALY" in page and "anomaly_score" in page
    assert 'coral_mfg_inspected_total{grade="anomalous",stream="visual_inspection"}' in metrics


def test_the_overlay_marks_an_anomalous_object() -> None:
    """The box the window, the web view's video and recordings draw: red, with the score."""
    from coral_mfg.core.frame import Frame
    from coral_mfg.core.results import FrameResult, InspectedObject
    from coral_mfg.outputs.overlay import GREEN, RED, build_overlay

    objects = (
        InspectedObject("apple", 0.9, (10, 10, 60, 60), "fresh_apple", 0.97, 1, False, True,
                        anomaly_score=0.31, anomalous=False),
        InspectedObject("apple", 0.9, (100, 10, 160, 60), "fresh_apple", 0.91, 2, False,
                        False, anomaly_score=1.62, anomalous=True),
        InspectedObject("apple", 0.9, (200, 10, 260, 60), "anomalous", 1.4, 3, False, False,
                        anomaly_score=1.4, anomalous=True),
    )
    frame = Frame("visual_inspection", 0, 0.0, 0.0, np.zeros((540, 960, 3), np.uint8), 1.0)
    marks = build_overlay(FrameResult(frame, (960, 540), "cpu", objects)).boxes
    assert [(m.color, m.label) for m in marks] == [
        (GREEN, "Fresh apple PASS 0.97"),
        (RED, "Fresh apple FAIL 0.91 ANOMALY 1.62"),
        (RED, "Anomalous FAIL 1.40"),
    ]


# --- painted defects, held-out good crops --------------------------------------------------------


def spots(crop: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Four dark brown spots, each about a tenth of the apple across."""
    rng = np.random.default_rng(0)
    out = crop.copy()
    h, w = crop.shape[:2]
    for _ in range(4):
        centre = (int(rng.uniform(0.3, 0.7) * w), int(rng.uniform(0.35, 0.75) * h))
        radius = max(2, int(min(w, h) * 0.09 * rng.uniform(0.8, 1.2)))
        cv2.circle(out, centre, radius, (30, 45, 70), cv2.FILLED, cv2.LINE_AA)
    return out


def cut(crop: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """A dark gash across the apple."""
    out = crop.copy()
    h, w = crop.shape[:2]
    cv2.line(out, (int(0.2 * w), int(0.35 * h)), (int(0.8 * w), int(0.75 * h)), (35, 30, 45),
             max(2, int(min(w, h) * 0.05)), cv2.LINE_AA)
    return out


def missing_piece(crop: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """A wedge of the apple gone, the dark belt showing through."""
    out = crop.copy()
    h, w = crop.shape[:2]
    cx, cy = int(w * 0.5), int(h * 0.55)
    wedge = [(cx, cy)] + [(int(cx + 2 * w * np.cos(t)), int(cy + 2 * h * np.sin(t)))
                          for t in np.linspace(-0.2 * np.pi, 0.2 * np.pi, 8)]
    cv2.fillPoly(out, [np.array(wedge, np.int32)], (50, 50, 55))
    return out


DEFECTS = (spots, cut, missing_piece)


@pytest.fixture(scope="module")
def painted(harvest: Harvest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, Path, Path]:
    """A model of every other crop of the first apple; the crops between them held out as
    good/, and, where the apple is whole in the picture, painted with each defect as bad/
    (also every held-out crop painted, in bad_all/)."""
    frames = sorted(harvest.crops)
    train, held = frames[0::2], frames[1::2]
    root = tmp_path_factory.mktemp("painted")
    for name in ("train", "labelled/good", "labelled/bad", "all/good", "all/bad"):
        (root / name).mkdir(parents=True)
    for f in train:
        shutil.copy(harvest.crops[f], root / "train")
    for f in held:
        crop = np.asarray(cv2.imread(str(harvest.crops[f])), np.uint8)
        for folder in ("labelled", "all"):
            cv2.imwrite(str(root / folder / "good" / f"{f}.png"), crop)
        for defect in DEFECTS:
            cv2.imwrite(str(root / "all" / "bad" / f"{f}_{defect.__name__}.png"), defect(crop))
            if f in harvest.whole:
                cv2.imwrite(str(root / "labelled" / "bad" / f"{f}_{defect.__name__}.png"),
                            defect(crop))
    out = root / "model"
    result = _cli("train-anomaly", str(root / "train"), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out, root / "labelled", root / "all"


def _evaluate(model: Path, labelled: Path) -> dict[str, Any]:
    result = _cli("eval-anomaly", str(model), str(labelled), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def test_painted_defects_are_flagged_and_held_out_good_crops_are_not(
        painted: tuple[Path, Path, Path]) -> None:
    model, labelled, _ = painted
    figures = _evaluate(model, labelled)
    print("painted defects, apple whole in the picture:", figures)
    assert figures["bad"] >= 2 * 3 and figures["good"] >= 10
    assert figures["false_alarm_rate"] == 0.0  # at most 0.5 %: none of these few
    assert figures["miss_rate"] == 0.0
    assert figures["auroc"] == 1.0


def test_eval_prints_auroc_and_both_rates(painted: tuple[Path, Path, Path]) -> None:
    model, _, everything = painted
    result = _cli("eval-anomaly", str(model), str(everything))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.search(r"^AUROC 0\.\d{4}$|^AUROC 1\.0000$", "\n".join(lines), re.M), lines
    assert any(line.startswith("false-alarm rate ") for line in lines)
    assert any(line.startswith("miss rate ") for line in lines)
    figures = _evaluate(model, everything)
    print("painted defects, every held-out crop:", figures)
    # a crop of an apple half out of the picture already lacks a piece: some are missed
    assert figures["auroc"] >= 0.9 and figures["false_alarm_rate"] == 0.0


# --- the threshold keeps the false-alarm rate ---------------------------------------------------


def _good_parts(seed: int) -> Any:
    """Embeddings of good parts as the extractor gives them: 1024 values around a mean,
    spread along a few directions (how parts vary) and a little everywhere (noise)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(24, 1024)) / 32
    spread = np.linspace(24, 4, 24)
    mean = rng.uniform(0, 2, 1024)

    def draw(n: int) -> npt.NDArray[np.float32]:
        varied = (rng.normal(size=(n, 24)) * spread) @ directions
        return np.asarray(mean + varied + rng.normal(scale=0.2, size=(n, 1024)), np.float32)

    return draw


@pytest.mark.parametrize("method", ["gaussian", "neighbours"])
def test_the_threshold_keeps_the_false_alarm_rate_on_new_good_crops(method: str) -> None:
    """Trained on 200 good crops for 0.5 %, new good crops of the same parts exceed the
    threshold at most that often, over five lines of parts (one line's own rate varies
    with the few crops its threshold rests on)."""
    from coral_mfg.inference.anomaly import ExtractorId
    from coral_mfg.training.anomaly import Embedded, Recipe, fit

    extractor = ExtractorId("extractor.tflite", "0" * 64, 1024, (224, 224))
    rates = []
    for seed in range(5):
        draw = _good_parts(seed)
        trained = fit(Embedded(draw(200), (), ()), extractor, Recipe(method=method))
        assert float(np.mean(trained.held_out > trained.model.threshold)) <= 0.005
        new = trained.model.scores(draw(10_000))
        rates.append(float(np.mean(new > 1.0)))
    print(method, "false-alarm rates on new good crops:", rates)
    assert float(np.mean(rates)) <= 0.005 and max(rates) <= 0.015, rates


def test_calibration_takes_the_conformal_rank() -> None:
    from coral_mfg.training.anomaly import calibrate

    held = np.arange(1, 1001, dtype=np.float64)  # 1..1000
    # ceil(1001 * 0.995) = 996: four of the thousand above it
    assert calibrate(held, 0.005) == 996.0
    assert calibrate(held[:150], 0.005) == 150.0  # too few to leave any above: the largest
    assert calibrate(held[:100], 0.1) == 91.0  # ceil(101 * 0.9) = 91


# --- bad input: one line, exit 2 ---------------------------------------------------------------


def _images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.jpg"), rng.integers(0, 255, (40, 50, 3), np.uint8))
    return folder


def test_too_few_good_crops_exit_2(tmp_path: Path) -> None:
    good = _images(tmp_path / "good", 3)
    line = _one_error(_cli("train-anomaly", str(good), "--out", str(tmp_path / "m")))
    assert "holds 3 image(s) (.bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp), fewer than 10" in line


def test_too_few_readable_good_crops_exit_2(tmp_path: Path) -> None:
    good = _images(tmp_path / "good", 8)
    for i in range(4):
        (good / f"torn{i}.jpg").write_bytes(b"\xff\xd8 not a picture")
    result = _cli("train-anomaly", str(good), "--out", str(tmp_path / "m"))
    assert "only 8 different good crop(s) could be read" in _one_error(result)
    assert "skipped 4 unreadable image(s)" in result.stdout
    assert not (tmp_path / "m").exists()  # the output folder it made is not left empty


def test_a_model_folder_inside_the_good_crops_is_not_read_as_crops(tmp_path: Path) -> None:
    """Trained again into the same folder, its own histogram is no good crop."""
    good = _images(tmp_path / "good", 12)
    out = good / "model"
    crops = []
    for _ in range(2):
        result = _cli("train-anomaly", str(good), "--out", str(out))
        assert result.returncode == 0, result.stdout + result.stderr
        crops.append(json.loads((out / "report.json").read_text())["images"]["found"])
    assert crops == [12, 12]


def test_a_missing_good_folder_exits_2(tmp_path: Path) -> None:
    line = _one_error(_cli("train-anomaly", str(tmp_path / "nowhere"), "--out",
                           str(tmp_path / "m")))
    assert "does not exist" in line


def test_a_model_from_another_extractor_is_refused(
        trained: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(trained[0], other)
    data = json.loads((other / "anomaly.json").read_text())
    data["extractor"]["sha256"] = "0" * 64
    (other / "anomaly.json").write_text(json.dumps(data))
    for result in (_cli("--headless", "--device", "cpu", "--anomaly", str(other)),
                   _cli("eval-anomaly", str(other), str(tmp_path))):
        line = _one_error(result)
        assert f"{other} was trained on embeddings of" in line
        assert "train it again with 'coral-mfg train-anomaly'" in line


def test_a_folder_that_is_no_anomaly_model_is_refused(tmp_path: Path) -> None:
    line = _one_error(_cli("--headless", "--device", "cpu", "--anomaly", str(tmp_path)))
    assert f"--anomaly {tmp_path} is not an anomaly model" in line


def test_a_model_file_for_its_folder_or_a_garbled_one_is_named(
        trained: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    given = trained[0] / "anomaly.json"
    line = _one_error(_cli("--headless", "--device", "cpu", "--anomaly", str(given)))
    assert f"--anomaly {given} is a file; pass the folder it is in" in line
    garbled = tmp_path / "garbled"
    shutil.copytree(trained[0], garbled)
    (garbled / "model.npz").write_bytes(b"not an npz at all" * 10)
    line = _one_error(_cli("--headless", "--device", "cpu", "--anomaly", str(garbled)))
    assert "not an array file train-anomaly wrote" in line and "pickle" not in line


def test_no_classifier_and_no_anomaly_model_is_refused() -> None:
    line = _one_error(_cli("--headless", "--device", "cpu", "--no-classify"))
    assert "--no-classify leaves camera visual_inspection nothing to judge" in line


def test_eval_needs_good_and_bad_folders(
        trained: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    _images(tmp_path / "good", 2)
    line = _one_error(_cli("eval-anomaly", str(trained[0]), str(tmp_path)))
    assert "bad" in line and "does not exist" in line


def test_eval_skips_and_counts_unreadable_crops(
        trained: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    _images(tmp_path / "good", 3)
    _images(tmp_path / "bad", 2)
    (tmp_path / "good" / "torn.jpg").write_bytes(b"\xff\xd8 not a picture")
    result = _cli("eval-anomaly", str(trained[0]), str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "skipped 1 unreadable image(s)" in result.stdout
    assert "3 good and 2 bad crops" in result.stdout
    assert _evaluate(trained[0], tmp_path)["unreadable"] == 1
