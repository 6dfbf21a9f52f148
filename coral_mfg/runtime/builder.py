"""Building a run: everything that can fail on bad input is opened and checked here,
inputs first (they fail fastest), so a run that starts has nothing left to refuse.

Nothing built here starts a thread or connects anywhere (:meth:`Pipeline.start` does);
what was opened before a failure is closed again on the way out.
"""

from __future__ import annotations

import difflib
import logging
import platform
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from coral_mfg.analytics.camera import CameraProcessor
from coral_mfg.analytics.inspection import (
    ANOMALOUS_COUNT,
    ANOMALY_GRADES,
    AnomalyScoring,
    InspectionRole,
)
from coral_mfg.analytics.lines import CountingLine, place_line
from coral_mfg.analytics.motion import MotionGate
from coral_mfg.analytics.presence import PresenceCheck, place_check
from coral_mfg.analytics.safety import SafetyRole, ZoneStore
from coral_mfg.analytics.tracking import Tracker
from coral_mfg.analytics.zones import KeepoutZone
from coral_mfg.capture.sources import (
    FrameSlot,
    Opener,
    SourceKind,
    SourceSupervisor,
    VideoSource,
    probe_source,
    source_fps,
    source_kind,
)
from coral_mfg.config.assets import app_home, load_manifest
from coral_mfg.config.cameras import CameraConfig
from coral_mfg.config.settings import Settings, StreamConfig
from coral_mfg.config.validators import redact_url
from coral_mfg.config.zones import LineSpec, PresenceSpec, ZoneSource
from coral_mfg.core.errors import ConfigError, ModelError, UserError, not_a_file
from coral_mfg.core.events import (
    EventSink,
    Graded,
    KeepoutEnter,
    ModelWarning,
    PresenceMissing,
    Stamper,
    ZoneDwellExceeded,
)
from coral_mfg.core.frame import Frame
from coral_mfg.core.geometry import Rect, letterbox
from coral_mfg.inference.anomaly import (
    RETRAIN,
    AnomalyModel,
    load_anomaly_model,
    station_extractor,
)
from coral_mfg.inference.labels import LABELS_FILE, labels_beside
from coral_mfg.inference.model_file import inspect_model
from coral_mfg.inference.model_report import warnings_beside
from coral_mfg.inference.plan import Labels, ModelPlan
from coral_mfg.inference.runtime import runtime_backend
from coral_mfg.inference.startup import Inference, read_models, start_inference
from coral_mfg.outputs.base import OutputThread, Sink
from coral_mfg.outputs.encoder import RecordTarget
from coral_mfg.outputs.event_log import EventLog, Rotation
from coral_mfg.outputs.harvest import Harvester
from coral_mfg.outputs.history import HistoryLimits, HistoryWriter
from coral_mfg.outputs.mqtt import MqttPublisher
from coral_mfg.outputs.recording import Recorder, recorders
from coral_mfg.outputs.retention import GB, Retention
from coral_mfg.outputs.snapshots import Snapshots
from coral_mfg.runtime.context import RunContext
from coral_mfg.runtime.pipeline import Pipeline, Reported, StreamUnit
from coral_mfg.runtime.plc import plc_servers, station_layout
from coral_mfg.runtime.scheduler import Scheduler, StreamState
from coral_mfg.runtime.shape_edit import EditableCamera, ShapeEditor
from coral_mfg.runtime.zone_watch import ZonePlacement, ZoneTarget, ZoneWatcher, zones_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Probe:
    """A source opened at start-up, with its first frame: proof that it works."""

    opener: Opener
    cap: VideoSource
    first: Frame | None
    fps: float
    size: tuple[int, int]


def build_pipeline(
    settings: Settings,
    extra_sinks: Sequence[Sink] = (),
    openers: dict[str, Opener] | None = None,
) -> Pipeline:
    """Open and check everything a run needs; a one-line error for what cannot be used.

    ``openers`` replaces how a camera (by name) is opened: tests feed frames their own way.
    """
    # OpenCV's own thread pool splits each small resize across cores that inference
    # already keeps busy; one thread measured 3 % more frames/s on 2 cores.
    cv2.setNumThreads(1)
    _check_outputs(settings)
    _check_files(settings)
    with ExitStack() as stack:
        probes: dict[str, _Probe] = {}
        for camera in settings.camera_list():
            probe = _probe(settings.stream(camera), settings.out_size,
                           (openers or {}).get(camera.name))
            stack.callback(probe.cap.release)  # only if the build fails: see pop_all below
            probes[camera.name] = probe
        pipeline = _assemble(settings, probes, list(extra_sinks), stack)
        stack.pop_all()  # built: the pipeline owns what was opened, and closes it
        return pipeline
    raise AssertionError("unreachable")  # for type checkers: the with block returns


def _assemble(settings: Settings, probes: dict[str, _Probe], extra: list[Sink],
              stack: ExitStack) -> Pipeline:
    out = settings.output
    cameras = settings.camera_list()
    snapshots = _snapshots(settings)
    stamper = Stamper(settings.station, snapshots.name if snapshots is not None else None)
    stop = threading.Event()
    ctx = RunContext(OutputThread([], stop), stop, stamper, tuple(c.name for c in cameras))
    # zones first: a bad zone is refused before the models are loaded
    placed = {c.name: zones_of(settings, c, letterbox(settings.out_size, probes[c.name].size))
              for c in cameras if c.safety}
    for _, placement, zones in placed.values():
        _note_scaled(zones, placement.picture)
    # the history too: a file that is not one is refused before the models are loaded
    history = _history(settings, stamper.station)
    if history is not None:
        stack.callback(history.close)
    own = _own_classifiers(settings, cameras)
    anomaly = _anomaly_models(settings, cameras)
    extractor = _extractor(anomaly) if anomaly.models else None
    inference = start_inference(settings.models, ctx.event, stamper, own, extractor)
    stack.callback(inference.pool.close)
    _log_start(settings, inference, cameras, placed)
    for name, folder in anomaly.of_camera.items():
        model = anomaly.models[folder]
        log.info("camera %s: anomaly model %s (%s, threshold %.4g, calibrated for %.1f%% false "
                 "alarms), extractor every %d frame(s) with objects", name, folder,
                 model.method, model.threshold, 100 * model.false_alarm_rate,
                 anomaly_every(settings, inference))
    sinks: list[Sink] = []
    reported: list[Reported] = []
    events = None
    if out.events is not None:
        events = EventLog(out.events, time.monotonic(), Rotation(
            out.events_rotate_mb * 2**20, out.events_rotate_daily, out.events_keep))
        stack.callback(events.close)
        sinks.append(events)
        reported.append(Reported("events", events.health, events.counts))
    if history is not None:
        sinks.append(history)
        reported.append(Reported("history", history.health, history.counts))
    fps = {name: p.fps for name, p in probes.items()}
    names = tuple(c.name for c in cameras)
    for key, recorder in _recorders(settings, names, fps):
        stack.callback(recorder.close)
        sinks.append(recorder)
        writer = recorder.writer
        reported.append(Reported(key, writer.health, writer.counts, writer.disk_warning_now))
    if snapshots is not None:
        sinks.append(snapshots)
        reported.append(Reported("snapshots", snapshots.health, snapshots.counts))
    mqtt = MqttPublisher(settings.mqtt, stamper.station) if settings.mqtt.mqtt else None
    if mqtt is not None:
        stack.callback(mqtt.close)
        sinks.append(mqtt)
        reported.append(Reported("mqtt", mqtt.health, mqtt.counts))
    if out.harvest_dir is not None:
        harvester = Harvester(out.harvest_dir, round(out.harvest_max_mb * 2**20))
        stack.callback(harvester.close)
        sinks.append(harvester)
        reported.append(Reported("harvest", harvester.health, harvester.counts))
    sinks.extend(extra)
    ctx.outputs.sinks.extend(sinks)
    model_warning = _model_warnings(inference.plan.classifier, own, ctx.event, stamper)
    scheduler = Scheduler([], inference.pool, ctx.cond, ctx.stop, on_result=ctx.result,
                          on_stream_done=ctx.stream_done, paused=ctx.paused)
    units: dict[str, StreamUnit] = {}
    targets: list[ZoneTarget] = []
    editable: dict[str, EditableCamera] = {}
    for camera in cameras:
        zones = placed[camera.name][2] if camera.safety else ()
        picture = letterbox(settings.out_size, probes[camera.name].size)
        processor, line, check = _processor(settings, camera, inference, stamper, zones=zones,
                                            own=own, picture=picture, anomaly=anomaly)
        if source_kind(camera.input) is not SourceKind.FILE:
            processor.frozen_after = settings.inputs.frozen_seconds
        source: ZoneSource | None = None
        if processor.safety is not None:
            source, placement, _ = placed[camera.name]
            targets.append(ZoneTarget(camera.name, source, placement, processor.safety.store))
        elif settings.cameras and settings.config is not None:
            source = ZoneSource(settings.config, "toml", camera.name)
        editable[camera.name] = EditableCamera(
            camera.name, source, picture, settings.safety.safety_check_whole_box, processor,
            line, check, camera.lines, camera.presence)
        units[camera.name] = _unit(settings, camera, probes[camera.name], processor, ctx=ctx,
                                   scheduler=scheduler)
    layout = station_layout(settings, lambda c: tuple(
        inspection.labels.classifier.values())
        if (inspection := units[c.name].processor.inspection) is not None else ())
    for server in plc_servers(settings, layout):
        stack.callback(server.close)
        sinks.append(server)
        ctx.outputs.sinks.append(server)
        reported.append(Reported(server.kind, server.health, server.counts))
    watcher = (ZoneWatcher(tuple(targets), ctx.stop, on_event=ctx.event, stamper=stamper)
               if targets else None)
    editor = ShapeEditor(editable, watcher, ctx.event, stamper, settings.out_size)
    return Pipeline(settings, inference, units, ctx=ctx, scheduler=scheduler,
                    zone_watcher=watcher, sinks=sinks, reported=reported, event_log=events,
                    mqtt=mqtt, history=history, shape_editor=editor,
                    model_warning=model_warning)


def _model_warnings(classifier: Path, own: tuple[Path, ...], on_event: EventSink,
                    stamper: Stamper) -> str | None:
    """Warn (log, event log) of each classifier whose training report says it is unfit to
    run; the first warning, for the screens, or None."""
    first = None
    for model in dict.fromkeys((classifier, *own)):
        for warning in warnings_beside(model):
            log.warning("classifier %s: %s", model, warning)
            on_event(ModelWarning(model=str(model), warning=warning,
                                  time=stamper.run_time(), stamp=stamper.stamp()))
            first = first or f"{model.parent.name}/{model.name}: {warning}"
    return first


@dataclass(frozen=True)
class _Anomaly:
    """The anomaly models the cameras use, read and checked once, and each camera's."""

    models: dict[Path, AnomalyModel]
    of_camera: dict[str, Path]

    def scoring(self, camera: str, inference: Inference, every: int) -> AnomalyScoring | None:
        folder = self.of_camera.get(camera)
        if folder is None:
            return None
        index = inference.pool.clients()[0].config.extractor_index
        assert index is not None, "the extractor is loaded when any camera scores anomalies"
        return AnomalyScoring(self.models[folder], index, every)


#: ``--anomaly_every``'s default on the CPU: the extractor on every 3rd frame with objects
#: keeps anomaly scoring within 15 % of the inspection stream's throughput there
CPU_ANOMALY_EVERY = 3


def anomaly_every(settings: Settings, inference: Inference) -> int:
    """Every how many frames with objects the extractor runs: as asked, else every 3rd on
    the CPU and every one on an Edge TPU."""
    if settings.models.anomaly_every is not None:
        return settings.models.anomaly_every
    on_tpu = inference.pool.clients()[0].config.device == "edgetpu"
    return 1 if on_tpu else CPU_ANOMALY_EVERY


def _classifies(settings: Settings, camera: CameraConfig) -> bool:
    """Whether a camera grades with a classifier: its own setting, else the station's."""
    return settings.models.classify if camera.classify is None else camera.classify


def _own_classifiers(settings: Settings, cameras: tuple[CameraConfig, ...]
                     ) -> tuple[Path, ...]:
    """The cameras' classifiers of their own (each once), of those that classify."""
    return tuple(dict.fromkeys(c.classifier_model for c in cameras
                               if c.inspection and c.classifier_model is not None
                               and _classifies(settings, c)))


def _camera_labels(settings: Settings, camera: CameraConfig, labels: Labels,
                   plan: ModelPlan) -> Labels:
    """An inspection camera's labels and passing grades, checked: the station's, or its own
    classifier's."""
    model, classify = camera.classifier_model, _classifies(settings, camera)
    grades = None if model is None or not classify else (_grades_file(camera, model),
                                                         inspect_model(model))
    return labels.narrowed(plan, camera.inspect_labels, camera.pass_grades, camera.name,
                           grades, classify=classify)


def check_models(settings: Settings) -> str:
    """Every check of the models a run makes before its processes start (files, builds,
    labels, passing grades, each camera's own classifier and anomaly model), for
    ``doctor``, whose verdict must not be "ready" for a run that would stop; what runs."""
    cameras = settings.camera_list()
    own = _own_classifiers(settings, cameras)
    anomaly = _anomaly_models(settings, cameras)
    extractor = _extractor(anomaly) if anomaly.models else None
    plan, labels = read_models(settings.models, own, extractor)
    for camera in cameras:
        if camera.inspection:
            _camera_labels(settings, camera, labels, plan)
    extra = [*(p.name for p in own), *(f"anomaly model {p}" for p in anomaly.models)]
    return f"{plan.detector.name} + {plan.classifier.name}" + (
        f" (+ {', '.join(extra)})" if extra else "")


def _anomaly_models(settings: Settings, cameras: tuple[CameraConfig, ...]) -> _Anomaly:
    """Each inspection camera's anomaly model (its own, else the station's), and whether it
    may go without a classifier: one without either has nothing to judge objects by."""
    models: dict[Path, AnomalyModel] = {}
    of_camera: dict[str, Path] = {}
    for camera in cameras:
        if not camera.inspection:
            continue
        folder = camera.anomaly or settings.models.anomaly
        if folder is None:
            if not _classifies(settings, camera):
                where = (f"[cameras.{camera.name}] classify = false" if camera.classify is False
                         else "--no-classify")
                raise ConfigError(f"{where} leaves camera {camera.name} nothing to judge its "
                                  "objects by: give it an anomaly model (--anomaly DIR, or "
                                  "anomaly = \"DIR\" in its table), or let it classify")
            continue
        if folder not in models:
            where = (f"[cameras.{camera.name}] anomaly" if camera.anomaly is not None
                     else "--anomaly")
            models[folder] = load_anomaly_model(folder, where=where)
        of_camera[camera.name] = folder
    return _Anomaly(models, of_camera)


def _extractor(anomaly: _Anomaly) -> Path:
    """The station's extractor (the CPU build, else the Edge TPU one), checked against the
    models: their embeddings must be its."""
    manifest = load_manifest()
    home = app_home()
    name, _ = station_extractor(manifest)
    extractor = manifest.extractor
    assert extractor is not None, "station_extractor names one"
    cpu = manifest.path(name, home)
    tpu = manifest.path(extractor.edgetpu, home) if extractor.edgetpu else None
    path = cpu if cpu.is_file() or tpu is None or not tpu.is_file() else tpu
    if not path.is_file():
        raise ModelError(f"the anomaly extractor {cpu} is missing; run 'coral-mfg "
                         "fetch-assets'")
    dims = int(np.prod(inspect_model(path).outputs[0].shape))
    for folder, model in anomaly.models.items():
        if model.extractor.dims != dims:
            raise ModelError(f"anomaly model {folder} holds {model.extractor.dims}-value "
                             f"embeddings but {path.name} gives {dims}; {RETRAIN}")
    return path


def _processor(settings: Settings, camera: CameraConfig, inference: Inference,
               stamper: Stamper, *, zones: tuple[KeepoutZone, ...],
               own: tuple[Path, ...], picture: Rect, anomaly: _Anomaly
               ) -> tuple[CameraProcessor, Callable[[LineSpec], CountingLine],
                          Callable[[PresenceSpec], PresenceCheck]]:
    """A camera's roles, each with its own tracker, thresholds and labels, and its lines
    and presence checks placed where its picture lies in the output frame."""
    plan = inference.plan
    lock = threading.Lock()
    safety = inspection = None
    if camera.safety:
        threshold = _own(camera.worker_threshold, plan.worker_threshold)
        safety = SafetyRole(camera.name, ZoneStore(zones), _tracker(settings, threshold),
                            settings.out_size, settings.tracking, stamper)
    if camera.inspection:
        threshold = _own(camera.inspection_threshold, plan.inspection_threshold)
        model, classify = camera.classifier_model, _classifies(settings, camera)
        labels = _camera_labels(settings, camera, inference.labels, plan)
        if not classify:
            labels = replace(labels, classifier=dict(ANOMALY_GRADES), passing=frozenset({0}))
        inspection = InspectionRole(
            camera.name, _tracker(settings, threshold, report_ended=True), settings.out_size,
            settings.tracking, stamper, labels, lock,
            classifier=0 if model is None or not classify else own.index(model) + 1,
            classify=classify,
            anomaly=anomaly.scoring(camera.name, inference, anomaly_every(settings, inference)))
    gate = (MotionGate(camera.motion_area, camera.motion_recheck_seconds)
            if camera.motion_gate else None)
    interval = 1.0 / camera.detect_fps if camera.detect_fps else 0.0
    where = f"{settings.config}: [cameras.{camera.name}]"
    names = {v: k for k, v in inference.labels.detector.items()}

    def label_id(label: str, what: str) -> int:
        if label not in names:
            near = difflib.get_close_matches(label, names, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(f"{where}: {what}: '{label}' is not a label of the detector"
                              f"{hint}; see {inference.plan.detector_labels}")
        return names[label]

    counted = ({"person"} if camera.safety else set()) | (
        set(inspection.labels.inspected.values()) if inspection is not None else set())

    def line(spec: LineSpec) -> CountingLine:
        crossing = set(spec.labels) if spec.labels is not None else counted
        if not crossing:
            raise ConfigError(f"{where}: line '{spec.name}' counts nothing on a camera with no "
                              "roles: set its labels (e.g. labels = [\"person\"])")
        for label in crossing:
            label_id(label, f"line '{spec.name}'")
        return place_line(spec, picture, frozenset(crossing), where)

    def check(spec: PresenceSpec) -> PresenceCheck:
        return place_check(spec, picture, label_id(spec.label, f"presence '{spec.name}'"),
                           where)

    lines = tuple(line(spec) for spec in camera.lines if spec.enabled)
    checks = tuple(check(spec) for spec in camera.presence if spec.enabled)
    processor = CameraProcessor(camera.name, settings.out_size, lock, safety, inspection, gate,
                                interval, lines, checks, stamper)
    return processor, line, check


def _grades_file(camera: CameraConfig, model: Path) -> Path:
    """A camera classifier's labels: as set, else the file training writes beside it."""
    if camera.classifier_labels is not None:
        return camera.classifier_labels
    beside = labels_beside(model)
    if beside is None:
        raise UserError(f"[cameras.{camera.name}]: no classifier_labels set and no {LABELS_FILE}"
                        f" beside {model}; set classifier_labels to the classifier's labels")
    return beside


def _own(value: float | None, station: float) -> float:
    return station if value is None else value


def _tracker(settings: Settings, high: float, report_ended: bool = False) -> Tracker:
    t = settings.tracking
    return Tracker(high, low=min(t.track_low_score, high), coast_frames=t.track_coast_frames,
                   report_ended=report_ended)


def _probe(config: StreamConfig, out_size: tuple[int, int], opener: Opener | None) -> _Probe:
    def default() -> tuple[VideoSource, Frame | None]:
        return probe_source(config.spec, *out_size, config.name)

    opener = opener or default
    cap, first = opener()
    size = first.size if first is not None else out_size
    return _Probe(opener, cap, first, source_fps(cap), size)


def _check_outputs(settings: Settings) -> None:
    """Output folders that cannot be written fail before anything slow is opened."""
    for _, _, _, problem in settings.written_problems():
        if problem:
            raise UserError(problem)


def _check_files(settings: Settings) -> None:
    """Files a run reads besides its inputs and models: the broker's TLS files."""
    for key in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"):
        path = settings.value(key)
        if path is None:
            continue
        problem = not_a_file(path, f"--{key}", "pass a PEM file")
        if problem:
            raise UserError(problem)
        if not path.is_file():
            raise UserError(f"--{key} {path} not found: pass an existing PEM file")


def _note_scaled(zones: tuple[KeepoutZone, ...], picture: tuple[int, int, int, int]) -> None:
    _, _, pw, ph = picture
    for z in zones:
        if z.spec is not None and z.spec.units == "pixels" and tuple(z.spec.frame_size) != (pw, ph):
            fw, fh = z.spec.frame_size
            log.info("zone '%s': its points are pixels of a %dx%d frame; scaled to the %dx%d "
                     "picture", z.name, fw, fh, pw, ph)


def _history(settings: Settings, station: str) -> HistoryWriter | None:
    """Every event also into the history (beside the event log unless told otherwise)."""
    path, out = settings.history_file, settings.output
    if path is None:
        return None
    return HistoryWriter(path, station, out.shifts,
                         HistoryLimits(out.history_keep_days, round(out.history_max_mb * 2**20)))


def _snapshots(settings: Settings) -> Snapshots | None:
    out = settings.output
    alarms = (KeepoutEnter.type, ZoneDwellExceeded.type, PresenceMissing.type)
    kinds = frozenset([*(alarms if out.snapshot_keepout else ()),
                       *((Graded.type,) if out.snapshot_graded else ()),
                       *((ANOMALOUS_COUNT,) if out.snapshot_anomalous else ())])
    folder = settings.snapshot_folder
    if folder is None or not kinds:
        return None
    return Snapshots(folder, kinds, out.snapshot_keep, settings.mask)


def _recorders(settings: Settings, cameras: tuple[str, ...], fps: dict[str, float]
               ) -> list[tuple[str, Recorder]]:
    """``--output``: one file of every camera's pane, tiled; ``--record_dir``: segments of
    each camera in a folder of its own, or (``record_composite``) of the tiled picture."""
    rec = settings.recording
    retention = Retention(round(rec.keep_gb * GB), rec.keep_days * 86400.0,
                          round(rec.min_free_gb * GB))
    lossless = not settings.inputs.realtime
    out: list[tuple[str, Recorder]] = []
    if settings.output.output is not None:
        target = RecordTarget(file=settings.output.output, retention=retention,
                              preset=rec.encoder_preset)
        out += [("recording", r) for r in recorders(
            target, cameras, settings.out_size, fps, settings.mask, lossless=lossless,
            composite=True)]
    if rec.record_dir is not None:
        target = RecordTarget(folder=rec.record_dir, segment_s=rec.segment_minutes * 60,
                              retention=retention, preset=rec.encoder_preset)
        made = recorders(target, cameras, settings.out_size, fps, settings.mask,
                         lossless=lossless, composite=rec.record_composite)
        out += [("segments" if r.camera is None else f"segments:{r.camera}", r) for r in made]
    return out


def _log_start(
    settings: Settings, inference: Inference, cameras: tuple[CameraConfig, ...],
    placed: dict[str, tuple[ZoneSource, ZonePlacement, tuple[KeepoutZone, ...]]],
) -> None:
    backend = runtime_backend()
    log.info("versions: python %s, numpy %s, opencv %s, %s %s", platform.python_version(),
             np.__version__, cv2.__version__, backend.name, backend.version)
    for line in inference.notes:
        log.info("inference: %s", line)
    plan = inference.plan
    log.info("detector: %s; thresholds worker %.2f, inspection %.2f", plan.note,
             plan.worker_threshold, plan.inspection_threshold)
    labels = inference.labels
    log.info("inspecting %s; grades %s (passing: %s)",
             ", ".join(dict.fromkeys(labels.inspected.values())),
             ", ".join(labels.classifier.values()),
             ", ".join(labels.classifier[i] for i in sorted(labels.passing)))
    for camera in cameras:
        extra = [f"at most {camera.detect_fps:g} detections/s"] if camera.detect_fps else []
        if camera.motion_gate:
            extra.append("motion gate on")
        log.info("camera %s: %s; %s%s", camera.name, _shown(camera.input),
                 " and ".join(camera.roles), f" ({', '.join(extra)})" if extra else "")
        if camera.name in placed:
            _, _, zones = placed[camera.name]
            log.info("camera %s: keep-out zones %s", camera.name, "; ".join(
                f"{z.name} ({z.mode}, enter {z.enter_frames}, exit {z.exit_frames}"
                f"{'' if z.enabled else ', disabled'}) from "
                f"{z.source.path if z.source else '-'}" for z in zones))


def _shown(spec: str) -> str:
    """An input as it may be logged: a URL's password is not."""
    return redact_url(spec)


def _unit(
    settings: Settings, camera: CameraConfig, probe: _Probe, processor: CameraProcessor, *,
    ctx: RunContext, scheduler: Scheduler,
) -> StreamUnit:
    config = settings.stream(camera)
    leaky = config.realtime or source_kind(config.spec) is not SourceKind.FILE
    slot = FrameSlot(ctx.cond, leaky=leaky)
    source = SourceSupervisor(
        config, slot, ctx.capture_stops[config.name], opener=probe.opener,
        on_end=scheduler.source_ended, on_event=ctx.event, stamper=ctx.stamper,
        paused=ctx.paused, first=(probe.cap, probe.first),
    )
    state = StreamState(processor, slot, config.max_frames)
    scheduler.streams.append(state)
    return StreamUnit(camera, config, source, state, processor)
