"""The detector + classifier pair the scheduler drives, opened on one device.

It decides which files run (the preferred detector, its CPU or Edge TPU
build), checks that labels fit the models, and exposes two calls: detect a
frame and grade a crop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from coral_mfg.assets import Manifest, ModelSet, app_home, load_manifest
from coral_mfg.detections import Detections
from coral_mfg.errors import ModelError
from coral_mfg.inference import adapters
from coral_mfg.inference.labels import read_labels
from coral_mfg.inference.runtime import Device, ModelChoice, Runtime
from coral_mfg.results import StageTimes
from coral_mfg.settings import ModelsConfig

log = logging.getLogger(__name__)

PERSON_ID = 0
APPLE_ID = 52
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
    if detector is None:
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
        order = [d.name for d in manifest.detectors]
        note = f"{det_set.name}, first available of {', '.join(order)}"
    clf = manifest.classifier
    classifier = models.classifier_model or str(
        _present(manifest, home, clf.cpu)
        or _present(manifest, home, clf.edgetpu)
        or manifest.path(clf.cpu or clf.labels, home)
    )
    det_labels = models.detection_labels or str(
        manifest.path(det_set.labels if det_set else "coco_labels.txt", home)
    )
    clf_labels = models.classifier_labels or str(manifest.path(clf.labels, home))

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
    )


def _check_detector_labels(labels: dict[int, str], path: Path) -> None:
    for class_id, name in ((PERSON_ID, "person"), (APPLE_ID, "apple")):
        if labels.get(class_id) != name:
            raise ModelError(
                f"labels file {path} does not match a COCO detector: id {class_id} should be "
                f"'{name}', found {labels.get(class_id)!r}; pass the COCO labels "
                "(models/coco_labels.txt)"
            )


def _check_classifier_labels(labels: dict[int, str], path: Path, classes: int) -> None:
    if sorted(labels) != list(range(classes)):
        raise ModelError(
            f"labels file {path} has {len(labels)} labels (ids {min(labels)}..{max(labels)}) "
            f"but the classifier outputs {classes} classes; pass the classifier's own labels"
        )


@dataclass
class InferenceEngine:
    """Detector and classifier interpreters, opened on the same device."""

    plan: ModelPlan
    runtime: Runtime
    detector_choice: ModelChoice = field(init=False)
    classifier_choice: ModelChoice = field(init=False)

    def __post_init__(self) -> None:
        self.detector_choice = self.runtime.choose("detector", self.plan.detector)
        self.classifier_choice = self.runtime.choose("classifier", self.plan.classifier)
        self.detector_labels = read_labels(self.plan.detector_labels)
        _check_detector_labels(self.detector_labels, self.plan.detector_labels)
        self.classifier_labels = read_labels(self.plan.classifier_labels)
        classes = self.classifier_choice.info.outputs[0].shape[-1]
        _check_classifier_labels(self.classifier_labels, self.plan.classifier_labels, classes)
        self.detector = self.runtime.open(self.detector_choice)
        self.classifier = self.runtime.open(self.classifier_choice)
        self.layout = adapters.layout_of(self.detector)

    @property
    def device(self) -> Device:
        """The device of the detector: the one the event log reports."""
        return self.detector_choice.device

    @property
    def co_compiled(self) -> bool:
        return (
            self.detector_choice.device is Device.EDGETPU
            and self.classifier_choice.device is Device.EDGETPU
        )

    def describe(self) -> list[str]:
        lines = [f"device: {self.runtime.describe()}"]
        for choice in (self.detector_choice, self.classifier_choice):
            lines.append(f"{choice.role}: {choice.path} on {choice.device} ({choice.reason})")
        if self.co_compiled:
            lines.append("detector and classifier share one Edge TPU (co-compiled)")
        elif self.runtime.tpu_error is not None and self.runtime.requested is Device.AUTO:
            lines.append(f"Edge TPU not used: {self.runtime.tpu_error}")
        return lines

    def detect(self, frame: np.ndarray, times: StageTimes | None = None) -> Detections:
        """Detections on a BGR frame, in its own pixels."""
        t0 = time.perf_counter()
        adapters.set_image(self.detector, frame)
        t1 = time.perf_counter()
        self.detector.invoke()
        t2 = time.perf_counter()
        if times is not None:
            times.preprocess += (t1 - t0) * 1000.0
            times.detect += (t2 - t1) * 1000.0
        return adapters.get_detections(self.detector, self.layout,
                                       (frame.shape[1], frame.shape[0]))

    def class_scores(
        self, frame: np.ndarray, roi: tuple[int, int, int, int], times: StageTimes | None = None
    ) -> npt.NDArray[np.float32]:
        """Scores of every grade for the ``x1, y1, x2, y2`` crop (source pixels) of a frame."""
        t0 = time.perf_counter()
        adapters.set_image(self.classifier, frame, roi)
        self.classifier.invoke()
        scores = adapters.class_scores(self.classifier)
        if times is not None:
            times.classify += (time.perf_counter() - t0) * 1000.0
        return scores
