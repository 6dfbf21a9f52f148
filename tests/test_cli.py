"""The command line as a user meets it: flags, aliases, one-line errors, sub-commands."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coral_mfg.commands.cli import main
from coral_mfg.config.flags import resolve_settings, run_parser
from tests.conftest import ROOT

ORIGINAL_FLAGS = [
    "--detection_model", "--detection_labels", "--classifier_model", "--classifier_labels",
    "--worker_safety_input", "--visual_inspection_input", "--anonymize", "--width",
    "--height", "--worker_threshold", "--inspection_threshold", "--keepout_points_path",
    "--safety_check_whole_box", "--device", "--config",
]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coral_mfg", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False, env={**os.environ, **(env or {})},
    )


def test_help_lists_the_original_flags_and_keys() -> None:
    text = run_parser().format_help()
    for flag in ORIGINAL_FLAGS:
        assert flag in text
    for key in ("q, Esc", "space", "fullscreen", "screenshot"):
        assert key in text


@pytest.mark.parametrize(
    ("argv", "key", "value"),
    [
        (["--worker_threshold", "0.45"], "worker_threshold", 0.45),
        (["--worker-threshold", "0.45"], "worker_threshold", 0.45),
        (["--width", "1280"], "width", 1280),
        (["--safety-check-whole-box"], "safety_check_whole_box", True),
        (["--device", "cpu"], "device", "cpu"),
        (["--no-realtime"], "realtime", False),
        ([], "width", 960),
        ([], "height", 540),
        ([], "device", "auto"),
        ([], "safety_check_whole_box", False),
    ],
)
def test_flags_and_aliases(argv: list[str], key: str, value: object) -> None:
    settings = resolve_settings(run_parser().parse_args(argv))
    assert settings.value(key) == value


def test_default_inputs_are_the_sample_videos() -> None:
    settings = resolve_settings(run_parser().parse_args([]))
    assert settings.inputs.worker_safety_input is not None
    assert settings.inputs.worker_safety_input.endswith("videos/worker-zone-detection.mp4")
    assert settings.inputs.visual_inspection_input is not None
    assert settings.inputs.visual_inspection_input.endswith("videos/apple-conveyor.mp4")
    assert settings.safety.keepout_points_path == ROOT / "configs" / "keepout_points.csv"


def test_config_file_is_laid_under_the_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text('width = 1280\nheight = 720\ndevice = "cpu"\nkeepout_points_path = "z.csv"\n')
    settings = resolve_settings(run_parser().parse_args(["--config", str(cfg), "--width", "640"]))
    assert settings.out_size == (640, 720)
    assert settings.models.device == "cpu"
    assert settings.safety.keepout_points_path == tmp_path / "z.csv"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "-5"], "argument --width: 'width' must be a positive whole number, got -5"),
        (["--worker_threshold", "1.5"], "must be a number from 0 to 1, got 1.5"),
        (["--inspection_threshold", "abc"], "invalid value 'abc'"),
        (["--device", "gpu"], "must be one of auto, edgetpu, cpu"),
    ],
)
def test_out_of_range_flags_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("widht = 3\n", "unknown key 'widht' (did you mean width?)"),
        ("width = 'big'\n", "'width' must be a positive whole number, got 'big'"),
        ("width = \n", "is not valid TOML"),
    ],
)
def test_bad_config_exits_2(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    result = _cli("--config", str(cfg))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(cfg) in lines[0] and message in lines[0]


@pytest.mark.parametrize(
    ("flag", "name", "message"),
    [
        ("--detection_model", "classifier.tflite", "is not an SSD detection model"),
        ("--classifier_model", "ssd_mobilenet_v1_coco_quant_detect.tflite",
         "is not an image classification model"),
        ("--detection_model", "missing.tflite", "not found: run 'coral-mfg fetch-assets'"),
        ("--classifier_labels", "coco_labels.txt", "but the classifier outputs 2 classes"),
        ("--detection_labels", "classifier_labels.txt", "does not match a COCO detector"),
    ],
)
def test_wrong_models_exit_2(flag: str, name: str, message: str) -> None:
    result = _cli(flag, str(ROOT / "models" / name), "--headless", "--device", "cpu")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("coral-mfg: error:")]


def test_device_edgetpu_without_tpu_exits_2() -> None:
    result = _cli("--device", "edgetpu", "--headless")
    assert result.returncode == 2
    (line,) = _error_lines(result.stderr)
    assert "libedgetpu.so.1 is not installed" in line or "no Edge TPU found" in line
    assert "--device cpu" in line


def test_edgetpu_classifier_with_device_cpu_exits_2() -> None:
    result = _cli("--device", "cpu", "--classifier_model",
                  str(ROOT / "models" / "classifier_edgetpu.tflite"), "--headless")
    assert result.returncode == 2
    assert "is compiled for the Edge TPU and cannot run with --device cpu" in result.stderr


@pytest.mark.parametrize("case", ["no-passing-grades", "no-anomaly-folder"])
def test_doctor_is_not_ready_for_a_run_that_would_stop(tmp_path: Path, case: str) -> None:
    """The run checks its models before loading them; doctor checks them the same way."""
    own = tmp_path / "classifier.tflite"
    own.write_bytes((ROOT / "models" / "classifier.tflite").read_bytes())
    (tmp_path / "classifier_labels.txt").write_text("0 bruised\n1 good\n")
    flags = (["--classifier_model", str(own)] if case == "no-passing-grades"
             else ["--anomaly", str(tmp_path / "nowhere")])
    result = _cli("doctor", "--device", "cpu", *flags)
    assert result.returncode == 1, result.stdout
    (models,) = [line for line in result.stdout.splitlines() if line.startswith("[ERR] models")]
    assert ("name the grade(s) that pass" if case == "no-passing-grades"
            else "no such folder") in models
    assert "verdict: cannot run (models)" in result.stdout
    run = _cli("--headless", "--device", "cpu", *flags)
    assert run.returncode == 2  # and the run stops, as doctor said


def test_doctor_reports_and_passes_on_this_machine() -> None:
    result = _cli("doctor")
    assert result.returncode == 0, result.stdout
    out = result.stdout
    for needle in ("TFLite runtime: ai_edge_litert", "NumPy:", "Edge TPU runtime:",
                   "Edge TPU devices:", "display:", "asset classifier.tflite: present, verified",
                   "verdict: ready on"):
        assert needle in out


def test_version_and_module_entry_point() -> None:
    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("coral-mfg ")


def test_main_returns_2_for_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", "/nonexistent/x.toml"]) == 2
    assert "config file /nonexistent/x.toml not found" in capsys.readouterr().err


def test_internal_errors_keep_their_traceback_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import coral_mfg.commands.run

    def broken(settings: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(coral_mfg.commands.run, "run", broken)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # restored after the test
    log_file = tmp_path / "run.log"
    assert main(["--headless", "--log_file", str(log_file)]) == 1
    text = log_file.read_text()
    assert "internal error" in text and "Traceback" in text and "ZeroDivisionError" in text


# --- rough edges a new user meets ------------------------------------------------------------


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The run refused with status 2: at most three lines, the error last, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 3, lines
    assert lines[-1].startswith("coral-mfg: error: "), lines
    assert "Traceback" not in result.stderr
    return lines[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--headless", "--screenshot", "x.png"], "--screenshot needs the window"),
        (["--worker_safety_input", "/nonexistent/a.mp4"],
         "video file /nonexistent/a.mp4 not found"),
        (["--visual_inspection_input", str(ROOT / "README.md")], "cannot open file"),
        (["--worker_safety_input", "/dev/video9"], "camera /dev/video9 not found"),
        (["--output", str(ROOT / "README.md" / "x.mp4")], "cannot be written"),
        (["--record_dir", str(ROOT / "README.md" / "rec")],
         f"--record_dir {ROOT / 'README.md' / 'rec'}: {ROOT / 'README.md' / 'rec'} cannot be "
         "written (Not a directory)"),
        (["--output", str(ROOT / "videos" / "apple-conveyor.mp4")],
         "is an input video and would be overwritten"),
        (["--events", str(ROOT / "videos" / "apple-conveyor.mp4")],
         "is an input video and would be overwritten"),
    ],
    ids=["screenshot-headless", "missing-file", "not-a-video", "no-camera", "output-folder",
         "record-folder", "output-over-input", "events-over-input"],
)
def test_bad_input_fails_fast_in_one_line(args: list[str], message: str) -> None:
    result = _cli("--headless", "--device", "cpu", *args)
    assert message in _one_error(result)
    assert "versions:" not in result.stderr  # refused before any model was loaded
    for noise in ("[ WARN", "[h264", "[mov,", "moov atom", "XNNPACK"):
        assert noise not in result.stderr


def test_library_noise_goes_to_the_debug_log_only(tmp_path: Path) -> None:
    quiet = _cli("--headless", "--device", "cpu", "--max_frames", "2")
    assert quiet.returncode == 0, quiet.stderr
    assert "XNNPACK" not in quiet.stderr
    debug = _cli("--headless", "--device", "cpu", "--max_frames", "2", "--log_level", "debug")
    assert debug.returncode == 0, debug.stderr
    assert any("DEBUG coral_mfg.native" in line and "XNNPACK" in line
               for line in debug.stderr.splitlines())


def test_summary_is_one_json_line() -> None:
    result = _cli("--headless", "--device", "cpu", "--no-realtime", "--max_frames", "3")
    line = next(x for x in result.stderr.splitlines() if "summary: " in x)
    summary = json.loads(line.split("summary: ", 1)[1])
    assert summary["type"] == "summary" and summary["frames"]["worker_safety"] == 3


def test_fetch_assets_refuses_an_unknown_name() -> None:
    assert "unknown asset 'foo'; known: " in _one_error(_cli("fetch-assets", "--only", "foo"))


def test_relative_model_paths_are_taken_from_the_working_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu",
         "--detection_model", "sub/missing.tflite"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert f"model file {tmp_path / 'sub' / 'missing.tflite'} not found" in _one_error(result)
    ok = subprocess.run(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--max_frames", "2",
         "--detection_model", "ssd_mobilenet_v1_coco_quant_detect.tflite"],
        cwd=ROOT / "models", capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr


def test_doctor_checks_the_config_inputs_and_output_folders(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("widht = 3\n")
    result = _cli("doctor", "--config", str(bad))
    assert result.returncode == 1
    assert "[ERR] config: " in result.stdout and "unknown key 'widht'" in result.stdout
    assert "verdict: cannot run (config)" in result.stdout
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _cli("doctor", "--worker_safety_input", str(tmp_path / "none.mp4"),
                  "--events", str(blocker / "events.jsonl"))
    assert result.returncode == 1
    assert "[ERR] input worker_safety: video file" in result.stdout
    assert "[ok ] input visual_inspection: " in result.stdout
    assert "[ERR] output events.jsonl: " in result.stdout


def test_setup_rerun_needs_no_package_index() -> None:
    """On a set-up machine, setup.sh installs and fetches nothing, so it works offline."""
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "--dev"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "installed and up to date" in result.stdout
    assert "fetched " not in result.stdout and "ready: " in result.stdout


def test_bench_help_says_how_long_it_takes() -> None:
    result = _cli("bench", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "the bound takes as long again, at most 10 s" in text
