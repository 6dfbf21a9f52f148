"""Which detector labels are inspected, and which grades pass: configuration, checked
against the label files at start-up, and used by every output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coral_mfg.config.flags import resolve_settings, run_parser
from coral_mfg.config.settings import check_value
from coral_mfg.core.errors import ConfigError
from coral_mfg.core.results import FrameResult, InspectedObject
from coral_mfg.outputs.overlay import GREEN, RED, build_overlay
from tests.conftest import ROOT, frames, jsonl


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coral_mfg", "--headless", "--no-realtime",
                           "--device", "cpu", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False, env=dict(os.environ))


def _events(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    result = _cli("--events", str(path), *args)
    assert result.returncode == 0, result.stderr
    return jsonl(path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("apple", ("apple",)), ("apple, orange", ("apple", "orange")), (["bottle"], ("bottle",)),
     ("apple,apple", ("apple",))],
)
def test_inspect_labels_take_a_list_or_commas(value: object, expected: tuple[str, ...]) -> None:
    assert check_value("inspect_labels", value, "--inspect_labels") == expected


@pytest.mark.parametrize("value", ["", " , ", [], [3]])
def test_inspect_labels_need_at_least_one_name(value: object) -> None:
    with pytest.raises(ConfigError, match="'inspect_labels' must be"):
        check_value("inspect_labels", value, "x.toml")


def test_config_file_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('inspect_labels = ["apple", "orange"]\npass_grades = "fresh_apple"\n'
                   'harvest_dir = "crops"\n')
    s = resolve_settings(run_parser().parse_args(["--config", str(cfg)]))
    assert s.models.inspect_labels == ("apple", "orange")
    assert s.models.pass_grades == ("fresh_apple",)
    assert s.output.harvest_dir == tmp_path / "crops"
    assert ("harvest_dir", tmp_path / "crops", tmp_path / "crops" / "probe") in s.written()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--inspect_labels", "bananna"], "--inspect_labels: 'bananna' is not a label of the "
         "detector in"),
        (["--inspect_labels", "apple,bananna"], "(did you mean 'banana'?)"),
        (["--pass_grades", "fresh"], "--pass_grades: 'fresh' is not a grade of the classifier "
         "in"),
        (["--harvest_dir", str(ROOT / "README.md" / "crops")], "cannot be written"),
    ],
    ids=["unknown-label", "one-of-two-unknown", "unknown-grade", "harvest-not-a-folder"],
)
def test_unknown_names_stop_the_start_in_one_line(args: list[str], message: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("coral-mfg: error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_label_not_on_the_line_grades_nothing(tmp_path: Path) -> None:
    events = _events(tmp_path, "--inspect_labels", "bottle")
    inspected = [o for e in events if e["type"] == "frame"
                 and e["stream"] == "visual_inspection" for o in e["objects"]]
    assert inspected == []
    assert events[-1]["inspected"] == {"fresh_apple": 0, "rotten_apple": 0}


def test_several_labels_and_pass_grades(tmp_path: Path) -> None:
    events = _events(tmp_path, "--inspect_labels", "orange,apple", "--pass_grades",
                     "rotten_apple")
    graded = [e for e in events if e["type"] == "graded"]
    assert [(g["label"], g["grade"], g["passed"]) for g in graded] == [
        ("apple", "fresh_apple", False), ("apple", "rotten_apple", True)]
    assert events[-1]["inspected"] == {"fresh_apple": 1, "rotten_apple": 1}


@pytest.mark.parametrize(("passed", "color"), [(True, GREEN), (False, RED), (None, GREEN)])
def test_the_overlay_colours_by_pass_not_by_name(passed: bool | None, color: object) -> None:
    from coral_mfg.core.frame import Frame

    image = frames("apple-conveyor.mp4")[0]
    frame = Frame("visual_inspection", 0, 0.0, 0.0, image, 0.0)
    obj = InspectedObject("bottle", 0.9, (10, 10, 50, 50), "scratched" if passed is False
                          else None if passed is None else "good", 0.8, 1, passed=passed)
    overlay = build_overlay(FrameResult(frame, (960, 540), "cpu", (obj,)))
    (mark,) = overlay.boxes
    assert mark.color == color
    # grades as words, with the verdict in words beside the colour
    assert mark.label.startswith({True: "Good PASS", False: "Scratched FAIL",
                                  None: "Bottle"}[passed])
    assert np.asarray(mark.box).tolist() == [10, 10, 50, 50]
