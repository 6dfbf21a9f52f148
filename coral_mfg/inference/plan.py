"""The detector + classifier pair a run uses: which files, their thresholds, and labels
that fit the models, checked before any process opens them."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

from coral_mfg.config.assets import (
    Manifest,
    ModelSet,
    app_home,
    load_manifest,
    not_installed,
    verify,
)
from coral_mfg.config.settings import ModelsConfig
from coral_mfg.core.errors import ModelError
from coral_mfg.inference.labels import LABELS_FILE, labels_beside, read_labels
from coral_mfg.inference.model_file import ModelInfo

log = logging.getLogger(__name__)

PERSON_ID = 0
#: The original demo's thresholds, tuned for MobileDet.
DEFAULT_WORKER_THRESHOLD = 0.3
DEFAULT_INSPECTION_THRESHOLD = 0.7


@dataclass(frozen=True)
class ModelPlan:
    """The files to run, and the detector's default thresholds."""

    detector: Path
    detector_labels: Path
    classifier: Path
    classifier_labels: Path
    detector_name: str
    worker_threshold: float
    inspection_threshold: float
    note: str
    inspect_labels: tuple[str, ...]
    pass_grades: tuple[str, ...]
    #: the bundled classifier's labels: only its grades have a default passing grade
    bundled_labels: Path | None = None


def _present(manifest: Manifest, home: Path, name: str | None) -> Path | None:
    if name is None:
        return None
    path = manifest.path(name, home)
    return path if path.is_file() else None


def plan_models(models: ModelsConfig, manifest: Manifest | None = None) -> ModelPlan:
    """Explicit files win; otherwise the first detector of the manifest that is present."""
    manifest = manifest or load_manifest()
    home = app_home()
    det_set: ModelSet | None = None
    note = "--detection_model"
    detector = str(models.detection_model) if models.detection_model else None
    if detector is not None:
        det_set = _known_detector(manifest, Path(detector))
    else:
        for candidate in manifest.detectors:
            found = _present(manifest, home, candidate.cpu) or _present(
                manifest, home, candidate.edgetpu
            )
            if found is not None:
                det_set, detector = candidate, str(found)
                break
        if det_set is None or detector is None:
            names = ", ".join(d.name for d in manifest.detectors)
            raise ModelError(
                f"no detector model found in {home / 'models'} (looked for {names}); "
                "run 'coral-mfg fetch-assets'"
            )
        note = not_installed(manifest, det_set) or det_set.title
    clf = manifest.classifier
    classifier = models.classifier_model or str(
        _present(manifest, home, clf.cpu)
        or _present(manifest, home, clf.edgetpu)
        or manifest.path(clf.cpu or clf.labels, home)
    )
    det_labels = models.detection_labels or str(
        manifest.path(det_set.labels if det_set else "coco_labels.txt", home)
    )
    bundled_labels = manifest.path(clf.labels, home)
    clf_labels = models.classifier_labels or str(
        bundled_labels if models.classifier_model is None
        else _labels_beside(Path(models.classifier_model)))

    def threshold(key: str, fallback: float) -> float:
        value = getattr(models, key)
        if value is not None:
            return float(value)
        own = getattr(det_set, key, None) if det_set else None
        return float(own) if own is not None else fallback

    return ModelPlan(
        detector=Path(detector),
        detector_labels=Path(det_labels),
        classifier=Path(classifier),
        classifier_labels=Path(clf_labels),
        detector_name=det_set.name if det_set else Path(detector).stem,
        worker_threshold=threshold("worker_threshold", DEFAULT_WORKER_THRESHOLD),
        inspection_threshold=threshold("inspection_threshold", DEFAULT_INSPECTION_THRESHOLD),
        note=note,
        inspect_labels=models.inspect_labels,
        pass_grades=models.pass_grades,
        bundled_labels=bundled_labels,
    )


def _known_detector(manifest: Manifest, path: Path) -> ModelSet | None:
    """The manifest's detector ``path`` is a build of (a copy counts: by its digest), for
    its thresholds; None for a detector of the user's own."""
    if not path.is_file():
        return None
    for candidate in manifest.detectors:
        for name in (candidate.cpu, candidate.edgetpu):
            if name is not None and verify(manifest.asset(name), path):
                return candidate
    return None


def _labels_beside(model: Path) -> Path:
    """A classifier of the user's own is read with the labels training wrote beside it,
    never the bundled apple grades (a defect would pass as ``fresh_apple``)."""
    beside = labels_beside(model)
    if beside is not None:
        return beside
    if not model.is_file():  # a missing model is said when it is opened, with its own fix
        return model.parent / LABELS_FILE
    raise ModelError(f"--classifier_model {model}: no --classifier_labels given and no "
                     f"{LABELS_FILE} beside it; pass --classifier_labels with the "
                     "classifier's own labels")


def _bundled_grades(grades: dict[int, str], bundled: Path | None) -> bool:
    """Whether ``grades`` are the bundled classifier's (its file, or a copy of it)."""
    if bundled is None or not bundled.is_file():
        return False
    try:
        return grades == read_labels(bundled)
    except ModelError:
        return False


def _check_detector_labels(labels: dict[int, str], path: Path) -> None:
    if labels.get(PERSON_ID) != "person":
        raise ModelError(
            f"labels file {path} does not match a COCO detector: id {PERSON_ID} should be "
            f"'person', found {labels.get(PERSON_ID)!r}; pass the COCO labels "
            "(models/coco_labels.txt)"
        )


def _ids_of(names: tuple[str, ...], labels: dict[int, str], path: Path, flag: str,
            what: str) -> dict[int, str]:
    """The ids of ``names`` in ``labels``; a one-line error for a name that is not there."""
    found: dict[int, str] = {}
    for name in names:
        ids = [i for i, label in labels.items() if label == name]
        if not ids:
            near = difflib.get_close_matches(name, labels.values(), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ModelError(f"--{flag}: '{name}' is not a {what} in {path}{hint}; pass "
                             f"names from that file")
        found.update(dict.fromkeys(ids, name))
    return found


def _no_pass_grades(where: str, path: Path, grades: dict[int, str]) -> ModelError:
    """A classifier of the user's own has no passing grade by default: its first grade
    is whatever sorts first (``bruised`` before ``good``)."""
    return ModelError(f"{where}: name the grade(s) that pass, from {path} "
                      f"({', '.join(grades.values())}); a classifier of your own has no "
                      "default")


def _check_classifier_labels(labels: dict[int, str], path: Path, classes: int) -> None:
    if sorted(labels) != list(range(classes)):
        raise ModelError(
            f"labels file {path} has {len(labels)} labels (ids {min(labels)}..{max(labels)}) "
            f"but the classifier outputs {classes} classes; pass the classifier's own labels"
        )


@dataclass(frozen=True)
class Labels:
    """The detector's class names and the classifier's grade names, checked against the
    models, and which of them the inspection uses."""

    detector: dict[int, str]
    classifier: dict[int, str]
    #: detector class ids whose objects are graded, and their names
    inspected: dict[int, str]
    #: grade ids drawn as passing
    passing: frozenset[int]
    #: whether ``passing`` was named (or is the bundled classifier's default): a camera
    #: grading with a classifier of the user's own must not fall back on its first grade
    passing_named: bool = True

    @classmethod
    def read(cls, plan: ModelPlan, classifier: ModelInfo) -> Labels:
        detector = read_labels(plan.detector_labels)
        _check_detector_labels(detector, plan.detector_labels)
        grades = read_labels(plan.classifier_labels)
        _check_classifier_labels(grades, plan.classifier_labels, classifier.outputs[0].shape[-1])
        inspected = _ids_of(plan.inspect_labels, detector, plan.detector_labels,
                            "inspect_labels", "label of the detector")
        passing = (frozenset(_ids_of(plan.pass_grades, grades, plan.classifier_labels,
                                     "pass_grades", "grade of the classifier"))
                   if plan.pass_grades else frozenset({min(grades)}))
        named = bool(plan.pass_grades) or _bundled_grades(grades, plan.bundled_labels)
        return cls(detector, grades, inspected, passing, named)

    def narrowed(self, plan: ModelPlan, inspect_labels: tuple[str, ...] | None,
                 pass_grades: tuple[str, ...] | None, camera: str,
                 grades: tuple[Path, ModelInfo] | None = None, *,
                 classify: bool = True) -> Labels:
        """A camera's own inspected labels and passing grades (None: the station's), and,
        with a classifier of its own, its grades (``grades``: the labels file and the
        model), checked like the station's, with a message that names the camera."""
        inspected = self.inspected if inspect_labels is None else _ids_of(
            inspect_labels, self.detector, plan.detector_labels,
            f"inspect_labels of camera {camera}", "label of the detector")
        classifier, grades_path = self.classifier, plan.classifier_labels
        passing = self.passing
        if grades is None and classify and pass_grades is None and not self.passing_named:
            raise _no_pass_grades("--pass_grades", grades_path, classifier)
        if grades is not None:
            grades_path, model = grades
            classifier = read_labels(grades_path)
            _check_classifier_labels(classifier, grades_path, model.outputs[0].shape[-1])
            passing = frozenset({min(classifier)})
            if pass_grades is None and not _bundled_grades(classifier, plan.bundled_labels):
                raise _no_pass_grades(f"[cameras.{camera}]: pass_grades", grades_path,
                                      classifier)
        if pass_grades is not None:
            passing = frozenset(_ids_of(pass_grades, classifier, grades_path,
                                        f"pass_grades of camera {camera}",
                                        "grade of the classifier"))
        return Labels(self.detector, classifier, inspected, passing, True)
