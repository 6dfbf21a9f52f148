from __future__ import annotations

from pathlib import Path

import pytest

from coral_mfg.config.settings import ModelsConfig
from coral_mfg.core.errors import ModelError
from coral_mfg.inference.labels import parse_labels, read_labels
from coral_mfg.inference.model_file import inspect_model
from coral_mfg.inference.plan import DEFAULT_INSPECTION_THRESHOLD, Labels, plan_models
from tests.conftest import model


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0  person\n1  bicycle\n", {0: "person", 1: "bicycle"}),
        ("0 fresh_apple\n1 rotten_apple", {0: "fresh_apple", 1: "rotten_apple"}),
        ("0  person\n2  car\n52  apple\n", {0: "person", 2: "car", 52: "apple"}),
        ("10  fire hydrant\n12  stop sign", {10: "fire hydrant", 12: "stop sign"}),
        ("person\nbicycle\ncar\n", {0: "person", 1: "bicycle", 2: "car"}),
        ("???\nperson\nbicycle\n", {0: "person", 1: "bicycle"}),
        ("\n\nfresh\n\nrotten\n\n", {0: "fresh", 1: "rotten"}),
        ("0: cat\n1: dog\n", {0: "cat", 1: "dog"}),
        ("", {}),
        ("3d printer\nrobot\n", {0: "3d printer", 1: "robot"}),
    ],
    ids=[
        "coral-two-spaces", "coral-one-space", "coral-gaps", "coral-multiword", "plain",
        "plain-placeholder", "blank-lines", "colon", "empty", "plain-leading-digit",
    ],
)
def test_parse_labels(text: str, expected: dict[int, str]) -> None:
    assert parse_labels(text) == expected


def test_real_coco_labels() -> None:
    labels = read_labels(model("coco_labels.txt"))
    assert labels[0] == "person"
    assert labels[52] == "apple"
    assert 11 not in labels  # COCO's id gaps are kept


def test_missing_labels_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"labels file .*nope\.txt not found"):
        read_labels(tmp_path / "nope.txt")


# --- a classifier of the user's own: its own grades, and which pass said out loud ------------


def _own_classifier(folder: Path, labels: str | None) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "classifier.tflite"
    path.write_bytes(model("classifier.tflite").read_bytes())
    if labels is not None:
        (folder / "classifier_labels.txt").write_text(labels)
    return path


def _labels(models: ModelsConfig) -> Labels:
    plan = plan_models(models)
    return Labels.read(plan, inspect_model(plan.classifier))


def test_an_own_classifier_is_read_with_the_labels_beside_it(tmp_path: Path) -> None:
    """Not the bundled apple grades: a bruised part would pass as ``fresh_apple``."""
    path = _own_classifier(tmp_path / "mine", "0 bruised\n1 good\n")
    labels = _labels(ModelsConfig(classifier_model=path, pass_grades=("good",)))
    assert labels.classifier == {0: "bruised", 1: "good"}
    assert labels.passing == frozenset({1})


def test_an_own_classifier_needs_its_passing_grades_named(tmp_path: Path) -> None:
    """Grades sort by name: its first (``bruised``) is no safe default for any camera that
    grades with it; one that names them, or does not grade, may run."""
    path = _own_classifier(tmp_path / "mine", "0 bruised\n1 good\n")
    models = ModelsConfig(classifier_model=path)
    plan = plan_models(models)
    labels = _labels(models)
    with pytest.raises(ModelError, match=r"--pass_grades: name the grade\(s\) that pass, from "
                       r".*classifier_labels\.txt \(bruised, good\)"):
        labels.narrowed(plan, None, None, "belt")
    assert labels.narrowed(plan, None, ("good",), "belt").passing == frozenset({1})
    assert labels.narrowed(plan, None, None, "belt", classify=False).classifier
    # the bundled classifier keeps its default, wherever it is given from
    models = ModelsConfig(classifier_model=model("classifier.tflite"))
    bundled = _labels(models).narrowed(plan_models(models), None, None, "belt")
    assert [bundled.classifier[i] for i in bundled.passing] == ["fresh_apple"]


def test_an_own_classifier_without_labels_is_refused(tmp_path: Path) -> None:
    path = _own_classifier(tmp_path / "mine", None)
    with pytest.raises(ModelError, match=r"--classifier_model .*: no --classifier_labels given "
                       r"and no classifier_labels\.txt beside it"):
        _labels(ModelsConfig(classifier_model=path, pass_grades=("good",)))


def test_a_copy_of_a_known_detector_keeps_its_thresholds(tmp_path: Path) -> None:
    """Found by its digest: the inspection threshold tuned for it, not the generic 0.7."""
    default = plan_models(ModelsConfig())
    copy = tmp_path / "detector.tflite"
    copy.write_bytes(default.detector.read_bytes())
    plan = plan_models(ModelsConfig(detection_model=copy))
    assert plan.detector == copy
    assert (plan.detector_name, plan.worker_threshold, plan.inspection_threshold) == (
        default.detector_name, default.worker_threshold, default.inspection_threshold)
    assert plan.inspection_threshold != DEFAULT_INSPECTION_THRESHOLD
    other = tmp_path / "own.tflite"
    other.write_bytes(default.detector.read_bytes() + b"\0")
    assert plan_models(ModelsConfig(detection_model=other)).inspection_threshold == \
        DEFAULT_INSPECTION_THRESHOLD
