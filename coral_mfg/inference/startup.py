"""Starting inference for a run: which builds, which device, how many processes.

Before an Edge TPU process starts, the Coral it would open is found in sysfs
(:mod:`~coral_mfg.inference.discovery`): a device this user may not open, or
one another coral-mfg holds (:mod:`~coral_mfg.inference.device_lock`), is
named with its fix and never touched. With ``--device auto`` the Edge TPU is
chosen only after an inference process has loaded its delegate, built and run
both models once, and given the classifier's known answer: a runtime that
crashes or answers wrongly there (a libedgetpu built for another TensorFlow)
costs a one-line note and the run goes on on the CPU; with ``--device
edgetpu`` it is a one-line error and exit status 2.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from coral_mfg.config.settings import ModelsConfig
from coral_mfg.core.errors import DeviceError, ModelError, UserError
from coral_mfg.core.events import EventSink, Stamper
from coral_mfg.inference import device_lock, discovery
from coral_mfg.inference.discovery import Coral
from coral_mfg.inference.errors import ProcessStartError
from coral_mfg.inference.model_file import twin_path
from coral_mfg.inference.plan import Labels, ModelPlan, plan_models
from coral_mfg.inference.pool import ProcessPool, ProcessSet
from coral_mfg.inference.protocol import KnownAnswer, ModelSpec, ProcessConfig, Step
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
    runtime_fault,
)

log = logging.getLogger(__name__)

#: An apple from the sample conveyor video (scripts/make_known_answer_crop.py).
KNOWN_ANSWER_CROP = Path(__file__).resolve().parents[1] / "data" / "known_answer_crop.jpg"
#: Output quantization steps the Edge TPU's scores of that crop may differ from the
#: CPU's by: rounding differs a little between the two; a libedgetpu built for
#: another TensorFlow gives zeros or noise, far more.
KNOWN_ANSWER_STEPS = 4


@dataclass(frozen=True)
class EdgeTpuPlace:
    """The Coral an Edge TPU process would open, found before it starts, and its lock.

    ``refusal`` is set when the process must not start at all: the device cannot
    be opened by this user, or another process holds it.
    """

    found: list[Coral]
    target: Coral | None
    name: str  # "usb:0", or the device string when discovery cannot place it
    key: str  # the lock
    refusal: ProcessStartError | None

    def describe(self) -> str:
        if self.target is not None:
            return f"Edge TPU {self.name}: {self.target.describe()}"
        return f"Edge TPU {self.name}: not shown by sysfs (libedgetpu will look for it)"


def place_edgetpu(device: str | None) -> EdgeTpuPlace:
    """Find the Coral ``device`` names and whether it may be opened, touching no device."""
    found = discovery.survey()
    target, name = discovery.select(found, device)
    key = target.key if target is not None else device_lock.ANY_DEVICE
    refusal = None
    if target is not None and target.problem:
        what = "USB" if target.kind == "usb" else "PCIe"
        refusal = ProcessStartError(
            f"Edge TPU {name} ({what} {target.sysname}, {target.ids}): {target.problem}",
            kind="setup", stage="checking the Edge TPU", step=Step.CLAIM)
    elif (holder := device_lock.holder(key)) is not None:
        refusal = ProcessStartError(f"Edge TPU {name} is in use by {holder.describe()}",
                                   kind="in_use", stage="checking the Edge TPU", step=Step.CLAIM)
    return EdgeTpuPlace(found, target, name, key, refusal)


def _placed(tpu: ProcessSet, place: EdgeTpuPlace, clf: Builds) -> ProcessSet:
    """The Edge TPU set told its device's lock, and how to check the classifier's answers."""
    answer = None
    if clf.tpu is not None and clf.cpu is not None:
        answer = KnownAnswer(str(KNOWN_ANSWER_CROP), str(clf.cpu.path), KNOWN_ANSWER_STEPS)
    configs = tuple(replace(c, edgetpu_lock=place.key, edgetpu_name=place.name,
                            known_answer=answer) for c in tpu.configs)
    return replace(tpu, configs=configs)


def _check_note(clf: Builds) -> str | None:
    if clf.tpu is not None and clf.cpu is None:
        return (f"known-answer check not run: {clf.tpu.path.name} has no CPU build "
                f"({twin_path(clf.tpu.path, edgetpu=False).name}) beside it to compare with")
    return None


def default_cpu_threads(processes: int) -> int:
    """Threads per CPU interpreter: the cores shared by the interpreter pairs."""
    return max(1, (os.cpu_count() or processes) // processes)


@dataclass(frozen=True)
class Inference:
    """A run's inference, started: the plan it follows, its labels and its processes."""

    plan: ModelPlan
    labels: Labels
    pool: ProcessPool
    notes: tuple[str, ...]  # said once in the log: where each model runs, and why


def _spec(choice: ModelChoice) -> ModelSpec:
    info = choice.info
    layout = info.postprocess_outputs if choice.role == "detector" else None
    return ModelSpec(str(info.path), choice.device is Device.EDGETPU, info.input_size,
                     info.inputs[0].dtype, layout or None)


def _set(
    device: Device, det: ModelChoice, clf: ModelChoice, count: int, *, models: ModelsConfig,
    backend: Backend,
) -> ProcessSet:
    threads = models.cpu_threads or default_cpu_threads(count)
    configs = tuple(
        ProcessConfig(
            name=f"{device.value}-{i}", runtime=backend.interpreter_module.__name__,
            device=device.value, edgetpu_device=models.edgetpu_device,
            edgetpu_library=edgetpu_library(), cpu_threads=threads,
            detector=_spec(det), classifier=_spec(clf), arena="",
        )
        for i in range(count)
    )
    where = f"detector {det.path.name} on {det.device}, classifier {clf.path.name} on {clf.device}"
    return ProcessSet(device, configs, f"{count} {device.value} process(es): {where}")


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

    def tpu_set(self, models: ModelsConfig) -> ProcessSet:
        """One Edge TPU process; a model without an Edge TPU build runs on its CPU."""
        return _set(Device.EDGETPU, _prefer_tpu(self.det), _prefer_tpu(self.clf), 1,
                    models=models, backend=self.backend)


def _sets(models: ModelsConfig, m: _Models) -> tuple[ProcessSet, ProcessSet | None]:
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
    cpu = (_set(Device.CPU, det.on(Device.CPU), clf.on(Device.CPU), models.cpu_processes,
                models=models, backend=backend) if has_cpu or requested is Device.CPU else None)
    if requested is Device.CPU or (det.tpu is None and clf.tpu is None):
        assert cpu is not None
        return cpu, None
    return m.tpu_set(models), cpu


def start_inference(models: ModelsConfig, on_event: EventSink, stamper: Stamper) -> Inference:
    """Plan the models, choose the device, start the processes; one-line errors otherwise."""
    m = _Models.read(models)
    det, clf, labels, backend = m.det, m.clf, m.labels, m.backend
    primary, fallback = _sets(models, m)
    notes = [primary.describe]
    place = None
    if primary.device is Device.EDGETPU:
        place = place_edgetpu(models.edgetpu_device)
        primary = _placed(primary, place, clf)
        notes.append(place.describe())
        notes.extend(n for n in [_check_note(clf)] if n)
    pool = ProcessPool(primary, fallback, labels, timeout=models.inference_timeout,
                       on_event=on_event, stamper=stamper, retry_s=models.edgetpu_retry_seconds)
    try:
        if place is not None and place.refusal is not None:
            raise place.refusal
        details = pool.start()
        notes.extend(_runtime_notes(details))
    except ProcessStartError as exc:
        pool.close()
        if exc.kind == "model":
            raise ModelError(f"{exc}; run 'coral-mfg fetch-assets' to restore it or pass "
                             "another model") from None
        if primary.device is not Device.EDGETPU:
            raise UserError(f"the inference process could not start: {exc}") from None
        message = edgetpu_failure(exc, models.edgetpu_device, backend,
                                  place.found if place is not None else None)
        if fallback is None:
            lone = next((b for b in (det, clf) if b.cpu is None), None)
            if Device(models.device) is Device.AUTO and lone is not None:
                message += (f"; and {lone.path.name} has no CPU build "
                            f"({twin_path(lone.path, edgetpu=False).name}) beside it to fall "
                            "back on")
            raise DeviceError(message) from None
        notes = [f"Edge TPU not used: {message}", fallback.describe]
        pool = ProcessPool(fallback, None, labels, timeout=models.inference_timeout,
                           on_event=on_event, stamper=stamper)
        pool.start()
    if Device(models.device) is Device.EDGETPU:
        try:
            for builds in (det, clf):
                builds.on(Device.EDGETPU)
        except ModelError:
            pool.close()
            raise
    return Inference(m.plan, labels, pool, tuple(notes))


def _runtime_notes(details: list[str]) -> list[str]:
    """What each Edge TPU process said when it was ready: its libedgetpu, the answer check."""
    return [f"Edge TPU runtime {d.split('; ', 1)[1]}" for d in details
            if "the Edge TPU delegate; " in d]


@dataclass(frozen=True)
class Probe:
    """What the Edge TPU probe found: whether it answers (rightly), in one line.

    ``runtime_fault`` says the trouble is libedgetpu itself (missing, unloadable,
    built for another TensorFlow), not the device.
    """

    ok: bool
    detail: str
    runtime_fault: bool = False


def probe_edgetpu(models: ModelsConfig) -> Probe:
    """Start an Edge TPU process for these models once, and stop it: does the runtime work,
    and does it give the classifier's known answer?

    A device this user may not open, or one in use, is reported without touching it.
    """
    m = _Models.read(models)
    if m.det.tpu is None and m.clf.tpu is None:
        return Probe(False, "no Edge TPU build of the detector or the classifier is present")
    place = place_edgetpu(models.edgetpu_device)
    tpu = _placed(m.tpu_set(models), place, m.clf)
    if place.refusal is not None:
        return Probe(False, edgetpu_failure(place.refusal, models.edgetpu_device, m.backend,
                                            place.found))
    pool = ProcessPool(tpu, None, m.labels, timeout=models.inference_timeout,
                       on_event=lambda event: None, stamper=Stamper("doctor"))
    try:
        details = pool.start()
    except ProcessStartError as exc:
        return Probe(False, edgetpu_failure(exc, models.edgetpu_device, m.backend, place.found),
                     runtime_fault(exc))
    finally:
        pool.close()
    extra = [_check_note(m.clf) or "", *_runtime_notes(details)]
    return Probe(True, "; ".join([f"{tpu.describe}: both models built and answered",
                                  *(e for e in extra if e)]))
