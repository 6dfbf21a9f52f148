"""Starting inference for a run: which builds, which device, how many workers.

With ``--device auto`` the Edge TPU is chosen only after a worker process has
loaded its delegate and built and run both models once: a runtime that
crashes there (a libedgetpu built for another TensorFlow) costs a one-line
note and the run goes on on the CPU; with ``--device edgetpu`` it is a one-line
error and exit status 2.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from coral_mfg.errors import DeviceError, ModelError, UserError
from coral_mfg.inference.client import WorkerStartError
from coral_mfg.inference.engine import Labels, ModelPlan, plan_models
from coral_mfg.inference.model_file import twin_path
from coral_mfg.inference.pool import EventSink, WorkerPool, WorkerSet
from coral_mfg.inference.protocol import ModelSpec, WorkerConfig
from coral_mfg.inference.runtime import (
    Backend,
    Builds,
    Device,
    ModelChoice,
    edgetpu_failure,
    edgetpu_library,
    find_builds,
    parse_device_string,
    runtime_backend,
)
from coral_mfg.settings import ModelsConfig

log = logging.getLogger(__name__)


def default_cpu_threads(workers: int) -> int:
    """Threads per CPU interpreter: the cores shared by the interpreter pairs."""
    return max(1, (os.cpu_count() or workers) // workers)


@dataclass(frozen=True)
class Inference:
    """A run's inference, started: the plan it follows, its labels and its workers."""

    plan: ModelPlan
    labels: Labels
    pool: WorkerPool
    notes: tuple[str, ...]  # said once in the log: where each model runs, and why


def _spec(choice: ModelChoice) -> ModelSpec:
    info = choice.info
    layout = info.postprocess_outputs if choice.role == "detector" else None
    return ModelSpec(str(info.path), choice.device is Device.EDGETPU, info.input_size,
                     info.inputs[0].dtype, layout or None)


def _set(
    device: Device, det: ModelChoice, clf: ModelChoice, count: int, *, models: ModelsConfig,
    backend: Backend,
) -> WorkerSet:
    threads = models.cpu_threads or default_cpu_threads(count)
    configs = tuple(
        WorkerConfig(
            name=f"{device.value}-{i}", runtime=backend.interpreter_module.__name__,
            device=device.value, edgetpu_device=models.edgetpu_device,
            edgetpu_library=edgetpu_library(), cpu_threads=threads,
            detector=_spec(det), classifier=_spec(clf), arena="",
        )
        for i in range(count)
    )
    where = f"detector {det.path.name} on {det.device}, classifier {clf.path.name} on {clf.device}"
    return WorkerSet(device, configs, f"{count} {device.value} worker(s): {where}")


def _prefer_tpu(builds: Builds) -> ModelChoice:
    if builds.tpu is not None:
        return builds.on(Device.EDGETPU)
    return builds.on(Device.CPU)


@dataclass(frozen=True)
class _Models:
    """The run's model files, read and checked: the start of every inference start-up."""

    plan: ModelPlan
    det: Builds
    clf: Builds
    labels: Labels
    backend: Backend

    @classmethod
    def read(cls, models: ModelsConfig) -> _Models:
        parse_device_string(models.edgetpu_device)
        plan = plan_models(models)
        det = find_builds("detector", plan.detector)
        clf = find_builds("classifier", plan.classifier)
        grader = clf.cpu or clf.tpu
        assert grader is not None, "find_builds always finds the named file"
        return cls(plan, det, clf, Labels.read(plan, grader), runtime_backend())

    def tpu_set(self, models: ModelsConfig) -> WorkerSet:
        """One Edge TPU worker; a model without an Edge TPU build runs on its CPU."""
        return _set(Device.EDGETPU, _prefer_tpu(self.det), _prefer_tpu(self.clf), 1,
                    models=models, backend=self.backend)


def _sets(models: ModelsConfig, m: _Models) -> tuple[WorkerSet, WorkerSet | None]:
    det, clf, backend = m.det, m.clf, m.backend
    requested = Device(models.device)
    if requested is Device.CPU:
        det.refuse_cpu()
        clf.refuse_cpu()
    if requested is Device.EDGETPU:
        if det.tpu is None and clf.tpu is None:
            det.on(Device.EDGETPU)  # nothing to run on it: say which build is missing
        # The device is checked first (the more basic problem); a missing build after.
        return m.tpu_set(models), None
    has_cpu = det.cpu is not None and clf.cpu is not None
    cpu = (_set(Device.CPU, det.on(Device.CPU), clf.on(Device.CPU), models.cpu_workers,
                models=models, backend=backend) if has_cpu or requested is Device.CPU else None)
    if requested is Device.CPU or (det.tpu is None and clf.tpu is None):
        assert cpu is not None
        return cpu, None
    return m.tpu_set(models), cpu


def start_inference(models: ModelsConfig, on_event: EventSink) -> Inference:
    """Plan the models, choose the device, start the workers; one-line errors otherwise."""
    m = _Models.read(models)
    det, clf, labels, backend = m.det, m.clf, m.labels, m.backend
    primary, fallback = _sets(models, m)
    notes = [primary.describe]
    pool = WorkerPool(primary, fallback, labels, timeout=models.inference_timeout,
                      on_event=on_event, retry_s=models.edgetpu_retry_seconds)
    try:
        pool.start()
    except WorkerStartError as exc:
        pool.close()
        if exc.kind == "model":
            raise ModelError(f"{exc}; run 'coral-mfg fetch-assets' to restore it or pass "
                             "another model") from None
        if primary.device is not Device.EDGETPU:
            raise UserError(f"the inference worker could not start: {exc}") from None
        message = edgetpu_failure(exc, models.edgetpu_device, backend)
        if fallback is None:
            lone = next((b for b in (det, clf) if b.cpu is None), None)
            if Device(models.device) is Device.AUTO and lone is not None:
                message += (f"; and {lone.path.name} has no CPU build "
                            f"({twin_path(lone.path, edgetpu=False).name}) beside it to fall "
                            "back on")
            raise DeviceError(message) from None
        notes = [f"Edge TPU not used: {message}", fallback.describe]
        pool = WorkerPool(fallback, None, labels, timeout=models.inference_timeout,
                          on_event=on_event)
        pool.start()
    if Device(models.device) is Device.EDGETPU:
        try:
            for builds in (det, clf):
                builds.on(Device.EDGETPU)
        except ModelError:
            pool.close()
            raise
    return Inference(m.plan, labels, pool, tuple(notes))


def probe_edgetpu(models: ModelsConfig) -> tuple[bool, str]:
    """Start an Edge TPU worker for these models once, and stop it: does the runtime work?

    Returns (answers, what happened): the one-line failure, or what ran where.
    """
    m = _Models.read(models)
    if m.det.tpu is None and m.clf.tpu is None:
        return False, "no Edge TPU build of the detector or the classifier is present"
    tpu = m.tpu_set(models)
    pool = WorkerPool(tpu, None, m.labels, timeout=models.inference_timeout,
                      on_event=lambda event: None)
    try:
        pool.start()
    except WorkerStartError as exc:
        return False, edgetpu_failure(exc, models.edgetpu_device, m.backend)
    finally:
        pool.close()
    return True, f"{tpu.describe}: both models built and answered"
