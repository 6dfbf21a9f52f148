"""Teaching the inspection a new product: harvest crops, train, quantize, co-compile, run.

The data is made by the application itself: crops of the sample apple video,
harvested into a folder per grade. Training runs for real (TensorFlow, from
scratch, a small input, two epochs) so the model file, the report and the run
with the new classifier are the real thing; the Edge TPU compiler, which this
machine cannot have, is a stand-in script on the PATH that checks its arguments.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from coral_mfg.inference.model_report import model_warnings
from coral_mfg.training import edgetpu_compile
from coral_mfg.training.command import passing_guess
from coral_mfg.training.dataset import (
    DatasetError,
    GradeFolders,
    check_counts,
    load_images,
    split,
)
from coral_mfg.training.keras_model import class_weights
from coral_mfg.training.report import Scores, markdown

from .conftest import ROOT, frames, model

GRADES = ["fresh_apple", "rotten_apple"]
DETECTOR = "ssd_mobilenet_v1_coco_quant_detect.tflite"


def _cli(*args: str, env: dict[str, str] | None = None,
         timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coral_mfg", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("coral-mfg: error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _write_images(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.jpg"), rng.integers(0, 255, (40, 50, 3), np.uint8))


# --- the dataset, before any TensorFlow -------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "for each of at least two grades (found: none)"),
        ({"good": 12}, "at least two grades (found: good)"),
        ({"good": 12, "empty": 0}, "empty holds no images (.bmp, .jpeg, .jpg, .png, .tif"),
        ({"good": 12, "bad": 12, "scratched": 0}, "scratched holds no images"),
        ({"good": 12, "dent": 3}, "grade 'dent' has 3 image(s)"),
    ],
    ids=["no-grades", "one-grade", "one-grade-with-images", "an-empty-grade", "too-few"],
)
def test_a_dataset_that_cannot_be_trained_on_exits_2_in_one_line(
        tmp_path: Path, layout: dict[str, int], message: str) -> None:
    for grade, n in layout.items():
        (tmp_path / grade).mkdir()
        _write_images(tmp_path / grade, n)
    result = _cli("train-classifier", str(tmp_path), "--weights", "none")
    assert message in _one_error(result)


def test_a_missing_dataset_folder_exits_2(tmp_path: Path) -> None:
    result = _cli("train-classifier", str(tmp_path / "nowhere"))
    assert "does not exist" in _one_error(result)
    (tmp_path / "crop.jpg").write_bytes(b"x")
    result = _cli("train-classifier", str(tmp_path / "crop.jpg"))
    assert "is a file, not a folder" in _one_error(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--min_images", "1"], "--min_images: a whole number of 2 or more, not '1'"),
     (["--epochs", "0"], "--epochs: a whole number of 1 or more, not '0'"),
     (["--input_size", "ten"], "--input_size: a whole number of 32 or more, not 'ten'"),
     (["--validation", "1.5"], "--validation: a share between 0 and 1")],
)
def test_a_bad_value_is_named_with_what_it_may_be(tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    result = _cli("train-classifier", str(tmp_path), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "invalid _" not in result.stderr


def _without(module: str, tmp_path: Path) -> dict[str, str]:
    """A dataset in tmp_path/data, and an environment in which ``module`` is not installed."""
    for grade in ("good", "bad"):
        _write_images(tmp_path / "data" / grade, 10)
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / f"{module}.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n")
    return {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}


def test_without_tensorflow_it_says_how_to_install_the_extra(tmp_path: Path) -> None:
    env = _without("tensorflow", tmp_path)
    result = _cli("train-classifier", str(tmp_path / "data"), "--no_compile", env=env)
    line = _one_error(result)
    assert "pip install 'coral-mfg[train]'" in line and "TensorFlow" in line


def test_without_matplotlib_it_says_so_before_training(tmp_path: Path) -> None:
    """TensorFlow installed on its own, without the extra: the report's curves would fail
    after the whole training, leaving no report."""
    env = _without("matplotlib", tmp_path)
    result = _cli("train-classifier", str(tmp_path / "data"), "--no_compile", "--weights",
                  "none", env=env)
    line = _one_error(result)
    assert "matplotlib" in line and "pip install 'coral-mfg[train]'" in line
    assert "epoch" not in result.stdout.lower()


def test_a_missing_weights_file_exits_2(tmp_path: Path) -> None:
    for grade in ("good", "bad"):
        _write_images(tmp_path / "data" / grade, 10)
    result = _cli("train-classifier", str(tmp_path / "data"), "--no_compile", "--weights",
                  str(tmp_path / "mobilenet.weights.h5"), "--output", str(tmp_path / "out"))
    assert "weights file" in _one_error(result) and "does not exist" in result.stderr


WEIGHTS_SCRIPT = """\
import sys
import keras
base = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False,
                                      weights=None)
base.save_weights(sys.argv[1])
"""


@pytest.mark.training
def test_it_starts_from_a_local_weights_file(harvest: Path, tmp_path: Path) -> None:
    weights = tmp_path / "mobilenet_v2_0.35_96_no_top.weights.h5"
    made = subprocess.run([sys.executable, "-c", WEIGHTS_SCRIPT, str(weights)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert made.returncode == 0 and weights.is_file(), made.stderr
    out = tmp_path / "model"
    result = _cli("train-classifier", str(harvest), "--output", str(out), "--weights",
                  str(weights), "--input_size", "96", "--alpha", "0.35", "--epochs", "1",
                  "--no_compile")
    assert result.returncode == 0, result.stdout + result.stderr
    recipe = json.loads((out / "report.json").read_text())["recipe"]
    assert recipe["weights"] == str(weights)
    assert recipe["frozen_layers"] == 100 and recipe["learning_rate"] == 1e-4
    assert not (out / DETECTOR).exists()  # --no_compile: no co-compile set-up either


def test_unreadable_images_are_skipped_and_listed(tmp_path: Path) -> None:
    _write_images(tmp_path / "good", 4)
    _write_images(tmp_path / "bad", 4, seed=1)
    (tmp_path / "bad" / "torn.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "bad" / "notes.txt").write_text("ignored: not an image")
    folders = GradeFolders.scan(tmp_path, min_images=4)
    assert folders.grades == ("bad", "good")  # sorted: the order is the label ids
    assert folders.labels_text() == "0 bad\n1 good\n"
    loaded = load_images(folders, 32)
    assert loaded.unreadable == (tmp_path / "bad" / "torn.jpg",)
    assert loaded.images.pixels.shape == (8, 32, 32, 3)
    assert np.bincount(loaded.images.labels).tolist() == [4, 4]
    check_counts(loaded.images, folders.grades, 4)
    with pytest.raises(DatasetError, match="grade 'bad' has 4 readable image"):
        check_counts(loaded.images, folders.grades, 5)


def test_split_holds_out_every_grade(tmp_path: Path) -> None:
    _write_images(tmp_path / "common", 40)
    _write_images(tmp_path / "rare", 3, seed=2)
    loaded = load_images(GradeFolders.scan(tmp_path, 3), 32).images
    train, val = split(loaded, 0.2, seed=0)
    assert sorted(np.bincount(val.labels).tolist()) == [1, 8]
    assert len(train) + len(val) == len(loaded)
    assert not set(train.paths) & set(val.paths)
    weights = class_weights(train.labels, 2)
    assert weights[1] > weights[0]  # the rare grade counts as much as the common one


def test_scores_per_grade_and_confusion_matrix() -> None:
    truth = np.array([0, 0, 0, 1, 1])
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.2, 0.8]])
    s = Scores.of(("good", "bad"), truth, scores)
    assert s.matrix.tolist() == [[2, 1], [0, 2]]
    assert s.accuracy == pytest.approx(0.8)
    assert s.per_grade == pytest.approx({"good": 2 / 3, "bad": 1.0})


# --- the Edge TPU compiler --------------------------------------------------------------------

COMPILER_SCRIPT = """\
#!{python}
# Stand-in edgetpu_compiler: checks the call, then answers as the real one does.
import json, pathlib, shutil, sys
args = sys.argv[1:]
log = pathlib.Path({log!r})
log.write_text(json.dumps(args))
if {fail!r}:
    print("ERROR: Didn't find op for builtin opcode 'FOO'", file=sys.stderr)
    sys.exit(1)
if len(args) != 4 or args[0] != "--out_dir":
    print("usage: edgetpu_compiler --out_dir DIR MODEL...", file=sys.stderr)
    sys.exit(2)
out = pathlib.Path(args[1])
print("Edge TPU Compiler version 16.0.384591198")
print("Started a compilation timeout timer of 180 seconds.")
print()
print("Models compiled successfully in 812 ms.")
for i, name in enumerate(args[2:]):
    src = pathlib.Path(name)
    if src.read_bytes()[4:8] != b"TFL3":
        print(f"Invalid model: {{name}}", file=sys.stderr)
        sys.exit(1)
    dst = out / (src.stem + "_edgetpu.tflite")
    shutil.copyfile(src, dst)
    print()
    print(f"Input model: {{src}}")
    print("Input size: 3.98MiB")
    print(f"Output model: {{dst}}")
    print("Output size: 4.21MiB")
    print("On-chip memory used for caching model parameters: " + ["3.42MiB", "1.05MiB"][i])
    print("On-chip memory remaining for caching model parameters: " + ["2.44MiB", "1.39MiB"][i])
    print("Off-chip memory used for streaming uncached model parameters: 0.00B")
    print("Number of Edge TPU subgraphs: 1")
    print("Total number of operations: " + ["64", "71"][i])
    print(f"Operation log: {{out / (src.stem + '_edgetpu.log')}}")
print()
print("Compilation child process completed within timeout period.")
print("Compilation succeeded!")
"""


def stand_in_compiler(folder: Path, *, fail: bool = False) -> Path:
    """A directory for PATH holding ``edgetpu_compiler``; it records its argv in argv.json."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "edgetpu_compiler"
    script.write_text(COMPILER_SCRIPT.format(python=sys.executable,
                                             log=str(folder / "argv.json"), fail=fail))
    script.chmod(0o755)
    return folder


def test_co_compile_calls_the_compiler_once_with_both_models_detector_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = stand_in_compiler(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    det, clf = model(DETECTOR), model("classifier.tflite")
    result = edgetpu_compile.co_compile(det, clf, tmp_path)
    assert result is not None and result.ok, result
    assert json.loads((bin_dir / "argv.json").read_text()) == [
        "--out_dir", str(tmp_path), str(det), str(clf)]
    assert [m["on_chip_used"] for m in result.models] == ["3.42MiB", "1.05MiB"]
    assert [m["off_chip_streamed"] for m in result.models] == ["0.00B", "0.00B"]
    assert result.models[1]["output"].endswith("classifier_edgetpu.tflite")


def test_a_failing_compiler_is_reported_in_one_line(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = stand_in_compiler(tmp_path / "bin", fail=True)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = edgetpu_compile.co_compile(model(DETECTOR), model("classifier.tflite"), tmp_path)
    assert result is not None and not result.ok
    assert result.message == ("edgetpu_compiler failed (exit status 1): ERROR: Didn't find op "
                              "for builtin opcode 'FOO'")


def test_without_the_compiler_nothing_is_run(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert edgetpu_compile.co_compile(model(DETECTOR), model("classifier.tflite"),
                                      tmp_path) is None
    assert edgetpu_compile.command_text(Path("d.tflite"), Path("c.tflite"), Path("out")) == (
        "edgetpu_compiler --out_dir out d.tflite c.tflite")


# --- end to end: harvest, train, co-compile, run ----------------------------------------------

def _summary(events: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(events.read_text().splitlines()[-1])
    assert summary["type"] == "summary"
    return summary


CROP_NAME = re.compile(r"^visual_inspection_\d{8}T\d{6}\.\d{3}Z_f\d{6}_t\d+_apple\.jpg$")


@pytest.fixture(scope="module")
def harvest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Crops of the sample apple video (four passes), filed by the application's grades."""
    folder = tmp_path_factory.mktemp("harvest")
    events = tmp_path_factory.mktemp("events") / "events.jsonl"
    run = _cli("--headless", "--device", "cpu", "--no-realtime", "--loop", "--max_frames",
               "300", "--harvest_dir", str(folder), "--events", str(events))
    assert run.returncode == 0, run.stderr
    summary = _summary(events)
    assert summary["outputs"]["harvest"]["written"] == sum(
        1 for _ in folder.rglob("*.jpg"))
    return folder


@pytest.mark.training
def test_harvest_files_every_graded_crop_under_its_grade(harvest: Path) -> None:
    counts = {d.name: len(list(d.glob("*.jpg"))) for d in harvest.iterdir()}
    assert set(counts) == set(GRADES)
    assert min(counts.values()) >= 20, counts
    for path in harvest.rglob("*.jpg"):
        assert CROP_NAME.match(path.name), path.name
        crop = cv2.imread(str(path))
        assert crop is not None and min(crop.shape[:2]) >= 8


@pytest.mark.training
def test_harvest_stops_at_its_size_bound(tmp_path: Path) -> None:
    crops = tmp_path / "crops"
    run = _cli("--headless", "--device", "cpu", "--no-realtime", "--harvest_dir", str(crops),
               "--harvest_max_mb", "0.05", "--events", str(tmp_path / "events.jsonl"))
    assert run.returncode == 0, run.stderr
    assert "no more crops are saved" in run.stderr
    harvest = _summary(tmp_path / "events.jsonl")["outputs"]["harvest"]
    assert harvest["full_skipped"] > 0 and harvest["written"] > 0
    sizes = sorted(p.stat().st_size for p in crops.rglob("*.jpg"))
    assert sum(sizes[:-1]) < 0.05 * 2**20  # the last crop written may cross the bound


@pytest.fixture(scope="module")
def trained(harvest: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """The harvest (plus one torn file) trained from scratch, small and short, with the
    stand-in compiler on the PATH."""
    (harvest / GRADES[1] / "torn.jpg").write_bytes(b"\xff\xd8\xff\xe0 torn off")
    out = tmp_path_factory.mktemp("model")
    bin_dir = stand_in_compiler(tmp_path_factory.mktemp("bin"))
    result = _cli("train-classifier", str(harvest), "--output", str(out), "--weights", "none",
                  "--input_size", "96", "--alpha", "0.35", "--epochs", "2",
                  env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout + result.stderr
    return out, bin_dir, result


@pytest.mark.training
def test_the_model_is_full_integer_with_uint8_input_and_output(
        trained: tuple[Path, Path, subprocess.CompletedProcess[str]]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    out = trained[0]
    it = Interpreter(str(out / "classifier.tflite"))
    it.allocate_tensors()
    (inp,), (outp,) = it.get_input_details(), it.get_output_details()
    assert inp["dtype"] == np.uint8 and list(inp["shape"]) == [1, 96, 96, 3]
    assert inp["quantization"] == (1.0, 0)  # the crop's pixels, as the application feeds them
    assert outp["dtype"] == np.uint8 and list(outp["shape"]) == [1, 2]
    kinds = {np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    assert kinds <= {"int8", "uint8", "int32"}, kinds  # no float left anywhere
    assert (out / "classifier_labels.txt").read_text() == "0 fresh_apple\n1 rotten_apple\n"


@pytest.mark.training
def test_the_report_is_complete_and_consistent(
        trained: tuple[Path, Path, subprocess.CompletedProcess[str]]) -> None:
    out, _, result = trained
    report = json.loads((out / "report.json").read_text())
    assert report["grades"] == GRADES
    assert report["recipe"] == {"input_size": 96, "alpha": 0.35, "weights": "none", "epochs": 2,
                                "batch_size": 32, "learning_rate": 1e-3, "seed": 0,
                                "frozen_layers": 0}
    assert report["images"]["unreadable"] == 1
    # per grade: the images trained and validated on, the unreadable one not counted
    assert sum(report["images"]["per_grade"].values()) == \
        report["images"]["train"] + report["images"]["validation"]
    val = report["images"]["validation"]
    for which in ("float", "quantized"):
        scores = report["validation"][which]
        matrix = np.array(scores["confusion_matrix"]["counts"])
        assert matrix.shape == (2, 2) and matrix.sum() == val
        assert set(scores["per_grade"]) == set(GRADES)
        assert all(0.0 <= v <= 1.0 for v in scores["per_grade"].values())
    assert report["quantization"]["total"] == val
    assert 0.0 <= report["quantization"]["agreement"] <= 1.0
    assert report["quantization"]["input"]["dtype"] == "uint8"
    assert 1 <= report["training"]["best_epoch"] <= report["training"]["epochs"] <= 2
    assert len(report["training"]["curves"]["val_loss"]) == report["training"]["epochs"]
    curves = cv2.imread(str(out / "training_curves.png"))
    assert curves is not None and curves.shape[0] > 100 and curves.std() > 0
    md = (out / "report.md").read_text()
    assert "fresh_apple" in md and "rotten_apple" in md and "Confusion matrix" in md
    assert "skipped 1 unreadable image(s)" in result.stdout
    assert "validation accuracy (quantized)" in result.stdout
    assert "Traceback" not in result.stderr and "TensorSpec" not in result.stdout
    assert report["warnings"] == model_warnings(report)
    for warning in report["warnings"]:
        assert f"warning: {warning}" in " ".join(result.stdout.split())
        assert f"- {warning}" in md


def _report(per_grade: dict[str, float], agreement: float) -> dict[str, Any]:
    return {"validation": {"quantized": {"per_grade": per_grade}},
            "quantization": {"agreement": agreement}}


def test_a_grade_below_80_percent_or_a_disagreeing_quantization_is_warned_of() -> None:
    assert model_warnings(_report({"fresh_apple": 0.97, "rotten_apple": 0.8}, 0.95)) == []
    (low,) = model_warnings(_report({"fresh_apple": 1.0, "rotten_apple": 0.0}, 1.0))
    assert low.startswith("validation accuracy below 80% for rotten_apple 0%")
    (low,) = model_warnings(_report({"fresh_apple": 0.79, "rotten_apple": 0.5}, 0.99))
    assert "for fresh_apple 79%, rotten_apple 50%" in low and "those grades" in low
    (apart,) = model_warnings(_report({"fresh_apple": 0.9, "rotten_apple": 0.9}, 0.9))
    assert apart.startswith("the quantized model agrees with the float one on only 90%")
    assert len(model_warnings(_report({"a": 0.1}, 0.5))) == 2


def test_the_report_leads_with_its_warnings() -> None:
    grades = ["fresh_apple", "rotten_apple"]
    scores = {"accuracy": 0.5, "per_grade": {"fresh_apple": 1.0, "rotten_apple": 0.0},
              "confusion_matrix": {"counts": [[5, 0], [5, 0]]}}
    report: dict[str, Any] = {
        "dataset": "crops", "grades": grades,
        "images": {"train": 40, "validation": 10, "unreadable": 0},
        "validation": {"float": scores, "quantized": scores},
        "quantization": {"agreement": 1.0}, "training": {"epochs": 2, "best_epoch": 2},
        "run_command": "coral-mfg", "warnings": []}
    report["warnings"] = model_warnings(report)
    text = markdown(report)
    assert "not fit to run" in text.split("| grade |")[0]
    assert f"- {report['warnings'][0]}" in text
    report["warnings"] = []
    assert "not fit to run" not in markdown(report)


def test_a_run_warns_at_start_up_of_an_unfit_classifier(tmp_path: Path) -> None:
    folder = tmp_path / "trained"
    folder.mkdir()
    (folder / "classifier.tflite").symlink_to(model("classifier.tflite"))
    (folder / "classifier_labels.txt").write_text("0 fresh_apple\n1 rotten_apple\n")
    (folder / "report.json").write_text(json.dumps(
        _report({"fresh_apple": 0.99, "rotten_apple": 0.0}, 0.97)))
    events = tmp_path / "events.jsonl"
    result = _cli("--headless", "--device", "cpu", "--no-realtime", "--max_frames", "2",
                  "--classifier_model", str(folder / "classifier.tflite"),
                  "--pass_grades", "fresh_apple", "--events", str(events))
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "WARNING" in x]
    assert f"classifier {folder / 'classifier.tflite'}: validation accuracy below 80% for " \
           "rotten_apple 0%" in line
    logged = [json.loads(x) for x in events.read_text().splitlines()]
    (warned,) = [e for e in logged if e["type"] == "model_warning"]
    assert warned["model"] == str(folder / "classifier.tflite")
    assert warned["warning"].startswith("validation accuracy below 80% for rotten_apple 0%")
    # the bundled classifier has no report beside it: nothing to say
    plain = _cli("--headless", "--device", "cpu", "--no-realtime", "--max_frames", "2")
    assert plain.returncode == 0 and "WARNING" not in plain.stderr


@pytest.mark.training
def test_it_co_compiles_with_the_detector_and_reports_the_memory(
        trained: tuple[Path, Path, subprocess.CompletedProcess[str]]) -> None:
    out, bin_dir, result = trained
    argv = json.loads((bin_dir / "argv.json").read_text())
    assert argv == ["--out_dir", str(out), str(out / DETECTOR), str(out / "classifier.tflite")]
    assert (out / DETECTOR).read_bytes() == model(DETECTOR).read_bytes()
    tpu = json.loads((out / "report.json").read_text())["edgetpu"]
    assert tpu["compiled"] is True
    assert [m["on_chip_used"] for m in tpu["models"]] == ["3.42MiB", "1.05MiB"]
    assert "on-chip 1.05MiB, off-chip 0.00B" in result.stdout
    assert (out / "classifier_edgetpu.tflite").is_file()
    assert f"--detection_model {out / DETECTOR}" in result.stdout


@pytest.mark.training
def test_the_application_runs_a_whole_video_with_the_new_classifier(
        trained: tuple[Path, Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    out = trained[0]
    events = tmp_path / "events.jsonl"
    run = _cli("--headless", "--device", "cpu", "--no-realtime",
               "--detection_model", str(out / DETECTOR),
               "--classifier_model", str(out / "classifier.tflite"),
               "--classifier_labels", str(out / "classifier_labels.txt"),
               "--pass_grades", "fresh_apple", "--events", str(events), timeout=300)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    summary = records[-1]
    assert summary["frames"]["visual_inspection"] == len(frames("apple-conveyor.mp4"))
    assert set(summary["inspected"]) == set(GRADES)
    graded = [r for r in records if r["type"] == "graded"]
    assert graded and all(r["grade"] in GRADES and r["label"] == "apple" for r in graded)
    assert all(r["passed"] is (r["grade"] == "fresh_apple") for r in graded)


def test_without_the_compiler_it_prints_the_command_and_how_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from coral_mfg.training.command import _compile

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    report: dict[str, object] = {}
    assert _compile(report, tmp_path, model(DETECTOR)) == 0
    tpu = report["edgetpu"]
    assert isinstance(tpu, dict) and tpu["compiled"] is False
    assert tpu["command"] == (f"edgetpu_compiler --out_dir {tmp_path} {tmp_path / DETECTOR} "
                              f"{tmp_path / 'classifier.tflite'}")
    assert "coral.ai/docs/edgetpu/compiler" in tpu["note"]


@pytest.mark.parametrize(
    ("grades", "printed"),
    [(["bruised", "good"], "good"), (["bad", "ok"], "ok"), (["defect", "Pass"], "Pass"),
     (["fresh_apple", "rotten_apple"], "fresh_apple"), (["dented", "scratched"], "GRADE")],
)
def test_the_printed_run_command_names_the_passing_grade(grades: list[str], printed: str) -> None:
    """A run refuses a classifier of one's own without --pass_grades: the command printed
    after training says which grade passes (a guess from the name), or GRADE to fill in."""
    assert passing_guess(grades) == printed
