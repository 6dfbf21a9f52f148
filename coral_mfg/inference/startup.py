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

Several Edge TPUs (``edgetpu_devices``) get one process each, with the same
models: each is placed and checked like a lone one, and the run starts once
any answers (the others are retried in the background, as a lost one is).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
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
    device: str | None = None  # the device string asked for (None: the first found)

    def describe(self) -> str:
        if self.target is not None:
            return f"Edge TPU {self.name}: {self.target.describe()}"
        return f"Edge TPU {self.name}: not shown by sysfs (libedgetpu will look for it)"


def place_edgetpu(device: str | None, found: list[Coral] | None = None, *,
                  several: bool = False) -> EdgeTpuPlace:
    """Find the Coral ``device`` names and whether it may be opened, touching no device.

    One of ``several`` that sysfs does not show gets a lock of its own string.
    """
    found = discovery.survey() if found is None else found
    target, name = discovery.select(found, device)
    if target is not None:
        key = target.key
    else:
        key = f"{device_lock.ANY_DEVICE}-{device}" if several and device else (
            device_lock.ANY_DEVICE)
    refusal = None
    if target is not None and target.problem:
        what = "USB" if target.kind == "usb" else "PCIe"
        refusal = ProcessStartError(
            f"Edge TPU {name} ({what} {target.sysname}, {target.ids}): {target.problem}",
            kind="setup", stage="checking the Edge TPU", step=Step.CLAIM)
    elif (holder := device_lock.holder(key)) is not None:
        refusal = ProcessStartError(f"Edge TPU {name} is in use by {holder.describe()}",
                                   kind="in_use", stage="checking the Edge TPU", step=Step.CLAIM)
    return EdgeTpuPlace(found, target, name, key, refusal, device)


@dataclass(frozen=True)
class EdgeTpuTargets:
    """The devices the Edge TPU processes drive, one process each, and what was said
    about choosing them."""

    devices: tuple[str | None, ...]  # None: the first libedgetpu finds
    notes: tuple[str, ...] = ()

    @property
    def several(self) -> bool:
        return len(self.devices) > 1


def edgetpu_targets(models: ModelsConfig, found: list[Coral]) -> EdgeTpuTargets:
    """``edgetpu_devices`` when set (``all``: every Coral sysfs shows, except those another
    coral-mfg holds), else the one ``edgetpu_device``."""
    wanted = models.edgetpu_devices
    if not wanted:
        return EdgeTpuTargets((models.edgetpu_device,))
    notes = []
    if models.edgetpu_device is not None:
        notes.append(f"edgetpu_device {models.edgetpu_device} not used: edgetpu_devices "
                     "names the Edge TPUs")
    if wanted != ("all",):
        return EdgeTpuTargets(tuple(wanted), tuple(notes))
    devices: list[str | None] = []
    for coral in found:
        name = discovery.name_of(found, coral)
        holder = device_lock.holder(coral.key)
        if holder is not None:
            notes.append(f"Edge TPU {name} left out: in use by {holder.describe()}")
        else:
            devices.append(name)
    if not devices:
        notes.append("edgetpu_devices all: sysfs shows no Coral free to use; libedgetpu will "
                     "look for one")
        devices.append(None)
    return EdgeTpuTargets(tuple(devices), tuple(notes))


def place_edgetpus(targets: EdgeTpuTargets, found: list[Coral]) -> list[EdgeTpuPlace]:
    """Each device placed; two strings that name one Coral are refused in one line.

    Of several, one that sysfs does not show while it shows others is refused: it
    could not be found again by its port, and an index alone may name, once it
    appears, a Coral another process drives.
    """
    places = [place_edgetpu(d, found, several=targets.several) for d in targets.devices]
    seen: dict[str, EdgeTpuPlace] = {}
    for i, place in enumerate(places):
        if place.target is None:
            if targets.several and found and place.refusal is None:
                shown = ", ".join(f"{discovery.name_of(found, c)} ({c.sysname})" for c in found)
                places[i] = replace(place, refusal=ProcessStartError(
                    f"Edge TPU {place.name} is not shown by sysfs (it shows {shown}): plug it "
                    "in, or leave it out of edgetpu_devices", kind="setup",
                    stage="checking the Edge TPU", step=Step.CLAIM))
            continue
        twin = seen.setdefault(place.key, place)
        if twin is not place:
            raise DeviceError(f"edgetpu_devices names one Edge TPU twice: {twin.device} and "
                              f"{place.device} are both {place.target.describe()}; list each "
                              "Coral once ('coral-mfg doctor' lists them)")
    return places


def _placed(tpu: ProcessSet, places: Sequence[EdgeTpuPlace], clf: Builds) -> ProcessSet:
    """The Edge TPU set told each device's lock, and how to check the classifier's answers.

    Several Corals that sysfs shows are found again before each start: see
    :func:`current_device`.
    """
    answer = None
    if clf.tpu is not None and clf.cpu is not None:
        answer = KnownAnswer(str(KNOWN_ANSWER_CROP), str(clf.cpu.path), KNOWN_ANSWER_STEPS)
    configs = tuple(replace(c, edgetpu_lock=place.key, edgetpu_name=place.name,
                            known_answer=answer)
                    for c, place in zip(tpu.configs, places, strict=True))
    names = tuple(place.name if place.target is not None
                  else place.device or Device.EDGETPU.value for place in places)
    placed = frozenset(place.key for place in places if place.target is not None)
    several = len(places) > 1
    return replace(tpu, configs=configs, names=names, serial=several,
                   prepare=partial(current_device, placed) if several and placed else None)


def current_device(placed: frozenset[str], config: ProcessConfig) -> ProcessConfig:
    """The process's config with the index that names its Coral now.

    libedgetpu numbers USB Corals waiting for their firmware before those
    running it, so opening one renumbers the others: ``usb:1`` at start-up may
    be ``usb:0`` a moment later, and an index kept from then would open (and
    reset) a Coral another process drives. So the Coral is found again by its
    port, just before its process starts; one sysfs no longer shows is not
    opened at all.
    """
    if config.edgetpu_lock not in placed:
        return config
    found = discovery.survey()
    coral = next((c for c in found if c.key == config.edgetpu_lock), None)
    kind, _, port = config.edgetpu_lock.partition("-")
    where = f"{'USB' if kind == 'usb' else 'PCIe'} {port}"
    if coral is None:
        raise ProcessStartError(f"Edge TPU {config.edgetpu_name} ({where}) is no longer shown "
                                "by sysfs: unplugged, or its cable or port failed",
                                kind="no_device", stage="checking the Edge TPU", step=Step.CLAIM)
    if coral.problem:
        raise ProcessStartError(f"Edge TPU {config.edgetpu_name} ({where}): {coral.problem}",
                                kind="setup", stage="checking the Edge TPU", step=Step.CLAIM)
    return replace(config, edgetpu_device=discovery.name_of(found, coral))


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
    device: Device, det: ModelChoice, clf: ModelChoice, edgetpus: Sequence[str | None], *,
    models: ModelsConfig, backend: Backend, extras: Sequence[ModelChoice] = (),
    extractor: ModelChoice | None = None,
) -> ProcessSet:
    """One process per entry of ``edgetpus``: the Edge TPU it drives (None for the CPU's,
    or for the first Edge TPU found)."""
    count = len(edgetpus)
    threads = models.cpu_threads or default_cpu_threads(count)
    configs = tuple(
        ProcessConfig(
            name=f"{device.value}-{i}", runtime=backend.interpreter_module.__name__,
            device=device.value, edgetpu_device=edgetpu,
            edgetpu_library=edgetpu_library(), cpu_threads=threads,
            detector=_spec(det), classifier=_spec(clf), arena="",
            classifiers=tuple(_spec(c) for c in extras),
            extractor=None if extractor is None else _spec(extractor),
        )
        for i, edgetpu in enumerate(edgetpus)
    )
    where = f"detector {det.path.name} on {det.device}, classifier {clf.path.name} on {clf.device}"
    where += "".join(f", camera classifier {c.path.name} on {c.device}" for c in extras)
    if extractor is not None:
        where += f", embedding extractor {extractor.path.name} on {extractor.device}"
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
    extras: tuple[Builds, ...] = ()  # the cameras' own classifiers
    extractor: Builds | None = None  # anomaly scoring's embedding extractor

    @property
    def crop_models(self) -> tuple[Builds, ...]:
        """Every model after the co-compiled pair."""
        return (*self.extras, *(b for b in [self.extractor] if b is not None))

    @classmethod
    def read(cls, models: ModelsConfig, classifiers: Sequence[Path] = (),
             extractor: Path | None = None) -> _Models:
        parse_device_string(models.edgetpu_device)
        plan = plan_models(models)
        det = find_builds("detector", plan.detector)
        clf = find_builds("classifier", plan.classifier)
        grader = clf.cpu or clf.tpu
        assert grader is not None, "find_builds always finds the named file"
        extras = tuple(find_builds("classifier", path) for path in classifiers)
        embed = None if extractor is None else find_builds("extractor", extractor)
        return cls(plan, det, clf, Labels.read(plan, grader), runtime_backend(), extras, embed)

    def tpu_set(self, models: ModelsConfig, targets: EdgeTpuTargets) -> ProcessSet:
        """One process per Edge TPU; a model without an Edge TPU build runs on its CPU."""
        return _set(Device.EDGETPU, _prefer_tpu(self.det), _prefer_tpu(self.clf),
                    targets.devices, models=models, backend=self.backend,
                    extras=[_prefer_tpu(b) for b in self.extras],
                    extractor=None if self.extractor is None else _prefer_tpu(self.extractor))


def _sets(models: ModelsConfig, m: _Models,
          targets: EdgeTpuTargets) -> tuple[ProcessSet, ProcessSet | None]:
    det, clf, backend = m.det, m.clf, m.backend
    requested = Device(models.device)
    if requested is Device.CPU:
        for builds in (det, clf, *m.crop_models):
            builds.refuse_cpu()
    if requested is Device.EDGETPU:
        if det.tpu is None and clf.tpu is None:
            det.on(Device.EDGETPU)  # nothing to run on it: say which build is missing
        # The device is checked first (the more basic problem); a missing build after.
        return m.tpu_set(models, targets), None
    has_cpu = all(b.cpu is not None for b in (det, clf, *m.crop_models))
    cpu = (_set(Device.CPU, det.on(Device.CPU), clf.on(Device.CPU),
                [None] * models.cpu_processes, models=models, backend=backend,
                extras=[b.on(Device.CPU) for b in m.extras],
                extractor=None if m.extractor is None else m.extractor.on(Device.CPU))
           if has_cpu or requested is Device.CPU else None)
    if requested is Device.CPU or (det.tpu is None and clf.tpu is None):
        assert cpu is not None
        return cpu, None
    return m.tpu_set(models, targets), cpu


def read_models(models: ModelsConfig, classifiers: Sequence[Path] = (),
                extractor: Path | None = None) -> tuple[ModelPlan, Labels]:
    """The models checked as a run checks them before any process opens them (the files,
    their builds, the labels and the passing grades), for ``doctor``."""
    m = _Models.read(models, classifiers, extractor)
    return m.plan, m.labels


def start_inference(models: ModelsConfig, on_event: EventSink, stamper: Stamper,
                    classifiers: Sequence[Path] = (), extractor: Path | None = None
                    ) -> Inference:
    """Plan the models, choose the device, start the processes; one-line errors otherwise.

    ``classifiers`` are the cameras' own, loaded in every process after the co-compiled
    one (``class_scores(..., classifier=1)`` is the first of them); ``extractor``, anomaly
    scoring's, after them (``ProcessConfig.extractor_index``)."""
    m = _Models.read(models, classifiers, extractor)
    det, clf, labels, backend = m.det, m.clf, m.labels, m.backend
    found = discovery.survey() if Device(models.device) is not Device.CPU else []
    targets = edgetpu_targets(models, found)
    primary, fallback = _sets(models, m, targets)
    notes = [primary.describe]
    places: list[EdgeTpuPlace] = []
    if primary.device is Device.EDGETPU:
        places = place_edgetpus(targets, found)
        primary = _placed(primary, places, clf)
        notes.extend(targets.notes)
        notes.extend(place.describe() for place in places)
        notes.extend(n for n in [_check_note(clf)] if n)
    pool = ProcessPool(primary, fallback, labels, timeout=models.inference_timeout,
                       on_event=on_event, stamper=stamper, retry_s=models.edgetpu_retry_seconds)
    refused = next((place for place in places if place.refusal is not None), None)
    try:
        if refused is not None and refused.refusal is not None:
            raise refused.refusal
        details = pool.start()
        notes.extend(_runtime_notes(details))
        notes.extend(_not_started(pool, places, backend))
    except ProcessStartError as exc:
        pool.close()
        if exc.kind == "model":
            raise ModelError(f"{exc}; run 'coral-mfg fetch-assets' to restore it or pass "
                             "another model") from None
        if primary.device is not Device.EDGETPU:
            raise UserError(f"the inference process could not start: {exc}") from None
        failed = refused or places[pool.start_failures[0][0]]
        message = edgetpu_failure(exc, failed.device, backend, found)
        if refused is None and len(places) > 1:
            message = f"none of Edge TPUs {', '.join(p.name for p in places)} started: {message}"
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


def _not_started(pool: ProcessPool, places: Sequence[EdgeTpuPlace], backend: Backend, *,
                 retried: bool = True) -> list[str]:
    """The processes that did not start with the others, each in one line (an Edge TPU's
    with its cause and fix)."""
    then = ", retried in the background" if retried else ""
    notes = []
    for i, exc in pool.start_failures:
        if i < len(places):
            place = places[i]
            why = edgetpu_failure(exc, place.device, backend, place.found)
            notes.append(f"Edge TPU {place.name} did not start{then}: {why}")
        else:
            notes.append(f"inference process {pool.clients()[i].name} did not start{then}: "
                         f"{exc}")
    return notes


def _runtime_notes(details: list[str]) -> list[str]:
    """What the Edge TPU processes said when ready: their libedgetpu, the answer check
    (said once when several say the same)."""
    return list(dict.fromkeys(f"Edge TPU runtime {d.split('; ', 1)[1]}" for d in details
                              if "the Edge TPU delegate; " in d))


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
    """Start the Edge TPU processes for these models once, and stop them: does the runtime
    work, and does each device give the classifier's known answer?

    A device this user may not open, or one in use, is reported without touching it.
    """
    m = _Models.read(models)
    if m.det.tpu is None and m.clf.tpu is None:
        return Probe(False, "no Edge TPU build of the detector or the classifier is present")
    found = discovery.survey()
    targets = edgetpu_targets(models, found)
    places = place_edgetpus(targets, found)
    tpu = _placed(m.tpu_set(models, targets), places, m.clf)
    refused = next((place for place in places if place.refusal is not None), None)
    if refused is not None and refused.refusal is not None:
        return Probe(False, edgetpu_failure(refused.refusal, refused.device, m.backend,
                                            refused.found))
    pool = ProcessPool(tpu, None, m.labels, timeout=models.inference_timeout,
                       on_event=lambda event: None, stamper=Stamper("doctor"))
    try:
        details = pool.start()
    except ProcessStartError as exc:
        first = places[pool.start_failures[0][0]] if pool.start_failures else places[0]
        return Probe(False, edgetpu_failure(exc, first.device, m.backend, found),
                     runtime_fault(exc))
    finally:
        pool.close()
    if pool.start_failures:
        return Probe(False, "; ".join(_not_started(pool, places, m.backend, retried=False)),
                     any(runtime_fault(exc) for _, exc in pool.start_failures))
    extra = [_check_note(m.clf) or "", *_runtime_notes(details)]
    return Probe(True, "; ".join([f"{tpu.describe}: both models built and answered",
                                  *(e for e in extra if e)]))
