"""Settings: one typed model, built once from the built-in defaults, then the
config file, then the command line, and handed to each stage as its section.

Every default is stated once, on its field below. The config file's top-level
keys are the command line's flag names, so one list documents both; sections
with tables of their own (``[[safety.zones]]``) sit beside them. Every bad
value ends in one line naming the file or flag, the table, the key and what is
expected, never a validation dump.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo

from coral_mfg.config.cameras import (
    CAMERA_FILE_KEYS,
    CAMERA_KEYS,
    INSPECTION,
    MAX_CAMERAS,
    SAFETY,
    SHAPE_TABLES,
    VISUAL_INSPECTION,
    WORKER_SAFETY,
    CameraConfig,
)
from coral_mfg.config.validators import (
    Bind,
    FilePath,
    Flag,
    MqttUrl,
    Name,
    Names,
    NonNegativeInt,
    OpcuaUrl,
    PositiveFloat,
    PositiveInt,
    RecordingPath,
    SentenceError,
    SomeNames,
    Text,
    TopicPrefix,
    UnitFloat,
    one_of,
    redact_url,
)
from coral_mfg.config.zones import ZONE_KEYS, LineSpec, PresenceSpec, ZoneSpec, zone_label
from coral_mfg.core.errors import ConfigError, read_user_text
from coral_mfg.core.files import into_folder, written_problem
from coral_mfg.core.shifts import shift_times

ENCODER_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")


def setting(default: Any, help: str, *, metavar: str | None = None, kind: str = "value",
            aliases: tuple[str, ...] = ()) -> Any:
    """A setting's default and what its command-line flag says, stated once.

    ``kind`` is how the flag takes it: ``value`` (``--key X``), ``switch``
    (``--key`` turns it on), ``toggle`` (``--key`` / ``--no-key``) or ``none``
    (the config file and the environment only: a password). ``aliases`` are
    older names that still work, as flags and as config keys.
    """
    extra: dict[str, Any] = {"kind": kind, "metavar": metavar, "aliases": list(aliases)}
    return Field(default, description=help, json_schema_extra=extra)


class _Section(BaseModel):
    """A frozen table of settings; unknown keys are refused, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: the heading of the section's flags in --help
    title: ClassVar[str] = ""


#: pycoral's and libedgetpu's device strings: usb, usb:N, pci, pci:N, :N.
EDGETPU_DEVICE = re.compile(r"^(?:(usb|pci)(?::(\d+))?|:(\d+))$")
_DEVICES = "Edge TPU device strings (usb:N, pci:N or :N) or all, each named once"


def edgetpu_device_list(value: Any) -> tuple[str, ...]:
    """Several Edge TPUs: a list, the comma-separated string a flag gives, or ``all``.

    In a list of several, each must name one device (``usb`` alone means any USB
    Coral, so two processes could open the same one); ``usb:01`` is ``usb:1``.
    """
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(_DEVICES)
    given = [i.strip() for i in items if i.strip()]
    if given == ["all"]:
        return ("all",)
    out: list[str] = []
    for item in given:
        match = EDGETPU_DEVICE.match(item)
        if item == "all" or match is None:
            raise ValueError(f"{_DEVICES} ('{item}' is not one)")
        kind, index = match.group(1) or "", match.group(2) or match.group(3)
        if index is None and len(given) > 1:
            raise ValueError(f"{_DEVICES} ('{item}' may be any {kind.upper()} Edge TPU; "
                             f"name one, like {kind}:0)")
        device = f"{kind}:{int(index)}" if index is not None else kind
        if device in out:
            raise ValueError(f"{_DEVICES} ('{device}' is named twice)")
        out.append(device)
    return tuple(out)


EdgeTpuDevices = Annotated[tuple[str, ...], PlainValidator(edgetpu_device_list)]
ShiftTimes = Annotated[tuple[str, ...], PlainValidator(shift_times)]


class ModelsConfig(_Section):
    """What inference opens: the model files, the device, the CPU layout."""

    title: ClassVar[str] = "models and devices"
    detection_model: FilePath | None = setting(
        None, "detector .tflite (default: the first available, see assets.toml)", metavar="FILE")
    detection_labels: FilePath | None = setting(
        None, "detector labels (default: the detector's own, COCO)", metavar="FILE")
    classifier_model: FilePath | None = setting(
        None, "classifier .tflite (default: the bundled apple classifier)", metavar="FILE")
    classifier_labels: FilePath | None = setting(
        None, "classifier labels (default: the classifier's own)", metavar="FILE")
    classify: Flag = setting(
        True, "grade inspected objects with the classifier; --no-classify with --anomaly: "
        "their verdict is normal or anomalous", kind="toggle")
    anomaly: FilePath | None = setting(
        None, "score inspected objects against the good parts modelled in DIR (coral-mfg "
        "train-anomaly); an unlike one is anomalous and fails", metavar="DIR")
    anomaly_every: PositiveInt | None = setting(
        None, "score every N-th frame with objects (default: 3 on the CPU, 1 on an Edge "
        "TPU; an object's score is a vote over its scored frames)", metavar="N")
    device: Annotated[str, one_of("auto", "edgetpu", "cpu")] = setting(
        "auto", "where inference runs: auto (the Edge TPU if one answers, else the CPU), "
        "edgetpu or cpu", metavar="auto|edgetpu|cpu")
    edgetpu_device: Text | None = setting(
        None, "which Edge TPU: usb, usb:N, pci, pci:N or :N (default: the first)",
        metavar="DEV")
    edgetpu_devices: EdgeTpuDevices = setting(
        (), "several Edge TPUs sharing the frames, a process each (all: every "
        "Coral found)", metavar="DEV[,DEV]|all")
    cpu_processes: PositiveInt = setting(
        2, "inference processes on the CPU, one per stream is best", metavar="N",
        aliases=("cpu_workers",))
    cpu_threads: PositiveInt | None = setting(
        None, "threads per CPU interpreter (default: cores / cpu_processes)", metavar="N")
    worker_threshold: UnitFloat | None = setting(
        None, "minimum person score (default: the detector's, 0.3 for MobileDet)", metavar="S")
    inspection_threshold: UnitFloat | None = setting(
        None, "minimum score of an inspected object (default: the detector's, 0.7 for "
        "MobileDet)", metavar="S")
    inspect_labels: SomeNames = setting(
        ("apple",), "detector labels whose objects are graded", metavar="LABEL[,LABEL]")
    pass_grades: Names = setting(
        (), "grades that pass (default fresh_apple; needed for your own classifier)",
        metavar="GRADE[,GRADE]")
    inference_timeout: PositiveFloat = setting(
        5.0, "an inference taking longer than S seconds restarts its process", metavar="S")
    edgetpu_retry_seconds: PositiveFloat = setting(
        30.0, "after falling back to the CPU, try the Edge TPU again every S seconds",
        metavar="S")


class TrackingConfig(_Section):
    """How detections become objects: duplicates merged, tracks kept through misses."""

    title: ClassVar[str] = "tracking"
    track_low_score: UnitFloat = setting(
        0.15, "weaker detections, down to S, may continue a track, never start one",
        metavar="S")
    track_coast_frames: PositiveInt = setting(
        5, "an object the detector misses is kept, where its track expects it, N frames",
        metavar="N")
    duplicate_iou: UnitFloat = setting(
        0.5, "boxes of one class overlapping this much are one object", metavar="IOU")
    duplicate_inside: UnitFloat = setting(
        0.8, "boxes of one class lying this much inside another are one object",
        metavar="SHARE")
    anonymize_margin: UnitFloat = setting(
        0.1, "the privacy mask covers the box plus this share of its size on each side",
        metavar="SHARE")


class InputsConfig(_Section):
    """The two sources and how they are read."""

    title: ClassVar[str] = "inputs"
    worker_safety_input: Text | None = setting(
        None, "video file, /dev/videoN or rtsp:// / http(s):// URL (default: the sample "
        "video)", metavar="SRC")
    visual_inspection_input: Text | None = setting(
        None, "video file, /dev/videoN or URL (default: the sample apple video)",
        metavar="SRC")
    realtime: Flag = setting(
        True, "pace files at their own fps; --no-realtime runs every frame, as fast as "
        "possible", kind="toggle")
    loop: Flag | None = setting(
        None, "loop files (default: loop in a window, stop at the end headless)",
        kind="toggle")
    stall_seconds: PositiveFloat = setting(
        10.0, "a source with no frame for S seconds is lost and reopened", metavar="S")
    frozen_seconds: PositiveFloat = setting(
        10.0, "a live picture unchanged for S seconds (a stuck encoder, a covered lens) "
        "is blind until it changes",
        metavar="S")
    max_frames: NonNegativeInt = setting(
        0, "stop each stream after N processed frames (0: no limit)", metavar="N")


class OutputConfig(_Section):
    """The output frame and the files a run writes."""

    title: ClassVar[str] = "output"
    width: PositiveInt = setting(
        960, "output width of each pane; the video is fitted, never stretched", metavar="W")
    height: PositiveInt = setting(540, "output height of each pane", metavar="H")
    anonymize: Flag = setting(
        False, "hide people under opaque boxes (with a margin; also where a person was just "
        "seen but missed on this frame)", kind="switch")
    output: RecordingPath | None = setting(
        None, "record both annotated streams side by side (H.264; playable even if the run "
        "is killed); a folder (out/) takes a new file per run", metavar="FILE.mp4|DIR/")
    events: FilePath | None = setting(None, "write the JSON Lines event log",
                                      metavar="FILE.jsonl")
    events_rotate_mb: NonNegativeInt = setting(
        0, "start a new event log past MB megabytes (0: never)", metavar="MB")
    events_rotate_daily: Flag = setting(False, "start a new event log every day",
                                        kind="switch")
    events_keep: PositiveInt = setting(
        14, "rotated event logs kept, the oldest deleted first", metavar="N")
    station: Name | None = setting(
        None, "this station's name in every event (default: the host name)", metavar="NAME")
    snapshot_dir: FilePath | None = setting(
        None, "JPEG snapshots of events (default: snapshots/ beside the event log)",
        metavar="DIR")
    snapshot_keepout: Flag = setting(True, "a snapshot at each keep-out entry", kind="toggle")
    snapshot_graded: Flag = setting(
        False, "a snapshot and the crop of each graded object", kind="toggle")
    snapshot_anomalous: Flag = setting(
        True, "a snapshot and the crop of each anomalous object (with anomaly scoring)",
        kind="toggle")
    snapshot_keep: PositiveInt = setting(
        2000, "snapshots kept, the oldest deleted first", metavar="N")
    harvest_dir: FilePath | None = setting(
        None, "save every graded crop as DIR/<grade>/*.jpg, to sort and train a classifier "
        "on", metavar="DIR")
    harvest_max_mb: PositiveFloat = setting(
        2000.0, "stop harvesting when DIR holds MB megabytes", metavar="MB")
    history: FilePath | None = setting(
        None, "every event also in this SQLite file: shift totals, coral-mfg report "
        "(default: history.sqlite beside the event log)",
        metavar="FILE.sqlite")
    no_history: Flag = setting(False, "keep no history, even beside the event log",
                               kind="switch")
    history_keep_days: PositiveFloat = setting(
        365.0, "events older than D days are deleted from the history", metavar="D")
    history_max_mb: PositiveFloat = setting(
        1000.0, "the history is kept under MB megabytes, the oldest events deleted first",
        metavar="MB")
    shifts: ShiftTimes = setting(
        (), "shift start times, local (default: one shift a day, from 00:00)",
        metavar="HH:MM[,HH:MM]")


class HttpConfig(_Section):
    """The web view; off unless asked for, and on loopback unless told otherwise."""

    title: ClassVar[str] = "web view (also an [http] table in the config)"
    http: Bind | None = setting(
        None, "serve the live page, /metrics, /healthz and /api/* (127.0.0.1:8080 for this "
        "machine only; any other address needs a token)", metavar="HOST:PORT")
    http_token: Text | None = setting(
        None, "the token viewers must give (better: $CORAL_MFG_HTTP_TOKEN or the config)",
        metavar="TOKEN")
    http_admin_token: Text | None = setting(
        None, "the token of admins, who may also change zones, lines and presence regions "
        "from the browser (the config or $CORAL_MFG_HTTP_ADMIN_TOKEN: never a flag); "
        "unset: nobody may", kind="none")
    http_max_connections: PositiveInt = setting(
        64, "connections at once; more get 503 and are closed", metavar="N")
    http_max_viewers: PositiveInt = setting(
        8, "live video and event streams at once", metavar="N")


class MqttConfig(_Section):
    """Events and state to an MQTT broker; the password never appears in a log."""

    title: ClassVar[str] = "MQTT (also an [mqtt] table in the config)"
    mqtt: MqttUrl | None = setting(
        None, "publish events and state to mqtt://host:port or mqtts://host:port",
        metavar="URL")
    mqtt_prefix: TopicPrefix = setting(
        "coral_mfg", "every topic starts with it (one or more levels)", metavar="PREFIX")
    mqtt_client_id: Text | None = setting(
        None, "client id (default coral_mfg-STATION)", metavar="ID")
    mqtt_username: Text | None = setting(
        None, "user (or $CORAL_MFG_MQTT_USERNAME); give the password in the config or "
        "$CORAL_MFG_MQTT_PASSWORD", metavar="USER")
    mqtt_password: Text | None = setting(
        None, "the broker's password (the config or $CORAL_MFG_MQTT_PASSWORD: never a flag)",
        kind="none")
    mqtt_ca_file: FilePath | None = setting(
        None, "mqtts: the CA to trust (default: the system's)", metavar="PEM")
    mqtt_cert_file: FilePath | None = setting(
        None, "mqtts: a client certificate, for brokers that ask", metavar="PEM")
    mqtt_key_file: FilePath | None = setting(
        None, "mqtts: the client certificate's key", metavar="PEM")
    mqtt_queue: PositiveInt = setting(
        1000, "messages waiting for the broker; more are dropped (counted)", metavar="N")
    mqtt_state_seconds: PositiveFloat = setting(
        5.0, "stream state is published every S seconds", metavar="S")


class OpcuaConfig(_Section):
    """An OPC UA server for PLCs; off unless asked for, and on loopback unless told
    otherwise. Its passwords never appear in a log."""

    title: ClassVar[str] = "OPC UA server (also an [opcua] table in the config; docs/plc.md)"
    opcua: OpcuaUrl | None = setting(
        None, "serve the station to PLCs at opc.tcp://HOST:PORT (off loopback: "
        "Basic256Sha256, a certificate and users)",
        metavar="URL")
    opcua_security: Annotated[str, one_of("auto", "none", "Basic256Sha256")] = setting(
        "auto", "none (loopback only), Basic256Sha256 (SignAndEncrypt), or auto: "
        "none on loopback only", metavar="auto|none|Basic256Sha256")
    opcua_certificate: FilePath | None = setting(
        None, "the station's own certificate (DER), made there on first start; needed "
        "with Basic256Sha256", metavar="FILE.der")
    opcua_private_key: FilePath | None = setting(
        None, "its private key (PEM; default: beside the certificate, .key.pem), made with "
        "it", metavar="FILE.pem")
    opcua_trusted_certs: FilePath | None = setting(
        None, "a folder of client certificates (DER or PEM): only they may connect, and "
        "they log in as readers", metavar="DIR")
    opcua_username: Text | None = setting(
        None, "a reader's user name; its password in the config or $CORAL_MFG_OPCUA_PASSWORD",
        metavar="USER")
    opcua_password: Text | None = setting(
        None, "the reader's password (the config or $CORAL_MFG_OPCUA_PASSWORD: never a flag)",
        kind="none")
    opcua_admin_username: Text | None = setting(
        None, "the one user who may call ResetCounts (password: "
        "$CORAL_MFG_OPCUA_ADMIN_PASSWORD)", metavar="USER")
    opcua_admin_password: Text | None = setting(
        None, "the admin's password (the config or $CORAL_MFG_OPCUA_ADMIN_PASSWORD)",
        kind="none")


class ModbusConfig(_Section):
    """A Modbus TCP server for PLCs: read-only discrete inputs and input registers."""

    title: ClassVar[str] = "Modbus TCP server (also a [modbus] table in the config; docs/plc.md)"
    modbus: Bind | None = setting(
        None, "serve alarms and counts to PLCs at HOST:PORT (0.0.0.0:502 for the plant "
        "network; Modbus has no security: keep it on the machine network)", metavar="HOST:PORT")


class RecordingConfig(_Section):
    """All-shift recording: segment files in a folder, the oldest deleted by retention."""

    title: ClassVar[str] = "all-shift recording (also a [recording] table in the config)"
    record_dir: FilePath | None = setting(
        None, "record in segment files in DIR, the oldest deleted by retention",
        metavar="DIR")
    segment_minutes: PositiveFloat = setting(5.0, "length of a segment", metavar="M")
    record_composite: Flag = setting(
        False, "record every camera tiled in one picture, instead of a folder per camera",
        kind="switch")
    keep_gb: PositiveFloat = setting(
        50.0, "total size of the segments kept (shared equally by the cameras), the oldest "
        "deleted first", metavar="GB")
    keep_days: PositiveFloat = setting(
        30.0, "age of the oldest segment kept", metavar="D")
    min_free_gb: PositiveFloat = setting(
        2.0, "below this free space, delete the oldest segments and warn", metavar="GB")
    encoder_preset: Annotated[str, one_of(*ENCODER_PRESETS)] = setting(
        "veryfast", "x264 preset, ultrafast to medium", metavar="PRESET")


class WindowConfig(_Section):
    """The OpenGL window, when there is one."""

    title: ClassVar[str] = "window"
    headless: Flag = setting(False, "no window", kind="switch")
    fullscreen: Flag = setting(False, "start full screen (f toggles)", kind="switch")
    screenshot: FilePath | None = setting(
        None, "save the final window contents before quitting (window only)",
        metavar="FILE.png")


class SafetyConfig(_Section):
    """Where the keep-out zones come from and how people are tested against them."""

    title: ClassVar[str] = "worker safety"
    keepout_points_path: FilePath = setting(
        Path("configs/keepout_points.csv"), "keep-out polygon, x,y in pixels of a 960x540 "
        "frame, used when the config defines no zones", metavar="CSV")
    safety_check_whole_box: Flag = setting(
        False, "overhead camera: any part of the box in the zone counts (default: the feet)",
        kind="switch")
    zones: tuple[ZoneSpec, ...] = setting((), "the [[safety.zones]] tables", kind="none")


class LogConfig(_Section):
    """Where the log goes and how much of it."""

    title: ClassVar[str] = "log"
    log_level: Annotated[str, one_of("debug", "info", "warning", "error",
                                     fold_case=True)] = setting(
        "info", "debug, info, warning or error", metavar="LEVEL")
    log_file: FilePath | None = setting(None, "also write the log to FILE", metavar="FILE")


SECTIONS: dict[str, type[_Section]] = {
    "models": ModelsConfig,
    "tracking": TrackingConfig,
    "inputs": InputsConfig,
    "output": OutputConfig,
    "recording": RecordingConfig,
    "mqtt": MqttConfig,
    "opcua": OpcuaConfig,
    "modbus": ModbusConfig,
    "http": HttpConfig,
    "window": WindowConfig,
    "safety": SafetyConfig,
    "log": LogConfig,
}
#: Tables the config file may hold, with the keys they take. A section's own table
#: (``[recording]``) groups keys that may also be written at the top level.
TABLES: dict[str, frozenset[str]] = {
    "safety": frozenset({"zones"}),
    "recording": frozenset(RecordingConfig.model_fields),
    "mqtt": frozenset(MqttConfig.model_fields),
    "opcua": frozenset(OpcuaConfig.model_fields),
    "modbus": frozenset(ModbusConfig.model_fields),
    "http": frozenset(HttpConfig.model_fields),
}
def _is_path(field: FieldInfo) -> bool:
    return "Path" in str(field.annotation)


#: Every key the command line and the config file share, and the section it belongs to.
FLAG_HOME: dict[str, str] = {
    name: section_name
    for section_name, section in SECTIONS.items()
    for name in section.model_fields
    if name != "zones"
}
#: Flag keys that name files: relative to the config file's folder when written there,
#: to the working directory when given as a flag.
FILE_KEYS = frozenset(k for k in FLAG_HOME if _is_path(SECTIONS[FLAG_HOME[k]].model_fields[k]))
INPUT_KEYS = ("worker_safety_input", "visual_inspection_input")


def flag_info(key: str) -> FieldInfo:
    """What the settings model says of a key: its help, default and flag (see setting)."""
    return SECTIONS[FLAG_HOME[key]].model_fields[key]


def flag_extra(key: str) -> dict[str, Any]:
    extra = flag_info(key).json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


#: Older names of settings, still taken as flags and config keys.
ALIASES: dict[str, str] = {alias: key for key in FLAG_HOME
                           for alias in flag_extra(key).get("aliases") or ()}


def default_of(key: str) -> Any:
    """The built-in default of a flag key, for help texts."""
    return SECTIONS[FLAG_HOME[key]].model_fields[key].default


@cache
def _adapter(key: str) -> TypeAdapter[Any]:
    field = SECTIONS[FLAG_HOME[key]].model_fields[key]
    annotated: Any = Annotated
    kind: Any = annotated[(field.annotation, *field.metadata)] if field.metadata else (
        field.annotation)
    return TypeAdapter(kind)


def check_value(key: str, value: Any, where: str) -> Any:
    """One value, checked as the model checks it; a one-line error otherwise."""
    try:
        return _adapter(key).validate_python(value)
    except ValidationError as exc:
        shown = _redacted(value) if key in SECRET_KEYS else value
        raise ConfigError(f"{where}: '{key}' must be {_reason(exc.errors()[0])}, "
                          f"got {shown!r}") from None


#: Settings naming what a run writes; True: a folder that takes the files itself.
WRITTEN_KEYS = (("output", False), ("events", False), ("log_file", False),
                ("record_dir", True), ("snapshot_dir", True), ("harvest_dir", True),
                ("history", False))
#: Keys whose values may hold a password: never echoed whole.
SECRET_KEYS = frozenset({"mqtt", "mqtt_password", "http_token", "http_admin_token",
                         "opcua_password", "opcua_admin_password"})


def _redacted(value: Any) -> str:
    """A URL without its password, or stars."""
    text = str(value)
    return redact_url(text) if "://" in text else "***"


def _reason(error: Mapping[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    if "error" in ctx:
        return str(ctx["error"])
    return str(error.get("msg", "valid")).lower()


# --- the resolved settings ------------------------------------------------------------------


@dataclass(frozen=True)
class StreamConfig:
    """What one stream's capture needs: its source and how to read it."""

    name: str
    spec: str
    realtime: bool
    loop: bool
    stall_s: float
    max_frames: int


class Settings(_Section):
    """Every setting of a run, built once; stages take their own section."""

    models: ModelsConfig = ModelsConfig()
    tracking: TrackingConfig = TrackingConfig()
    inputs: InputsConfig = InputsConfig()
    output: OutputConfig = OutputConfig()
    recording: RecordingConfig = RecordingConfig()
    mqtt: MqttConfig = MqttConfig()
    opcua: OpcuaConfig = OpcuaConfig()
    modbus: ModbusConfig = ModbusConfig()
    http: HttpConfig = HttpConfig()
    window: WindowConfig = WindowConfig()
    safety: SafetyConfig = SafetyConfig()
    log: LogConfig = LogConfig()
    cameras: tuple[CameraConfig, ...] = ()  # the config's [cameras.NAME] tables, if any
    config: Path | None = None  # the config file these came from, if any
    zones_from_csv: bool = True  # the legacy CSV is the zone (no zones in the config, or flag)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.window.headless and self.window.screenshot is not None:
            raise ValueError("--screenshot needs the window: drop --headless, or drop "
                             "--screenshot and record with --output")
        given = ([c.input for c in self.cameras] if self.cameras else
                 [p for p in (self.inputs.worker_safety_input,
                              self.inputs.visual_inspection_input) if p is not None])
        inputs = {Path(p).resolve() for p in given if not _is_device_or_url(p)}
        for key in ("output", "events", "record_dir", "harvest_dir", "history"):
            path = self.value(key)
            if path is not None and path.resolve() in inputs:
                raise ValueError(f"--{key} {path} is an input video and would be overwritten; "
                                 f"pass another path to --{key}")
        out = self.output
        if out.no_history and out.history is not None:
            raise ValueError(f"--no-history and --history {out.history} say the opposite: "
                             "drop one")
        if self.history_file is not None and out.events is not None and (
                self.history_file.resolve() == out.events.resolve()):
            raise ValueError(f"--history {self.history_file} is the event log too: pass "
                             "another path to --history")
        return self

    @property
    def out_size(self) -> tuple[int, int]:
        return (self.output.width, self.output.height)

    def written(self) -> list[tuple[str, Path, Path]]:
        """(flag, path as set, a file the run would create there) for each output it
        writes, so its folder can be tried before anything slow is opened."""
        found = []
        for key, is_folder in WRITTEN_KEYS:
            path = self.value(key)
            if path is not None:
                found.append((key, path, path / "probe" if is_folder else path))
        return found

    def written_problems(self) -> list[tuple[str, Path, Path, str | None]]:
        """Each output as :meth:`written` gives it, with why the run cannot write it (one
        line with the fix) or None: the run stops on the first, doctor lists them all."""
        folders = dict(WRITTEN_KEYS)
        return [(key, path, probe, written_problem(key, path, probe, folders[key]))
                for key, path, probe in self.written()]

    @property
    def snapshot_folder(self) -> Path | None:
        """Where snapshots go: the setting, else "snapshots" beside the event log, if any."""
        out = self.output
        return out.snapshot_dir or (out.events.parent / "snapshots" if out.events else None)

    @property
    def history_file(self) -> Path | None:
        """Where the history is kept: the setting, else "history.sqlite" beside the event
        log, if any; None with ``no_history``."""
        out = self.output
        if out.no_history:
            return None
        return out.history or (out.events.parent / "history.sqlite" if out.events else None)

    @property
    def station(self) -> str:
        """This station's name in every event: the setting, else the host name."""
        import socket

        return self.output.station or socket.gethostname()

    @property
    def mask(self) -> float | None:
        """The privacy mask's margin when people are anonymized, else None."""
        return self.tracking.anonymize_margin if self.output.anonymize else None

    @property
    def loop(self) -> bool:
        loop = self.inputs.loop
        return loop if loop is not None else not self.window.headless

    def camera_list(self) -> tuple[CameraConfig, ...]:
        """The cameras that run: the config's enabled ``[cameras.NAME]`` tables, else the
        original demo's two streams from their flags."""
        if self.cameras:
            return tuple(c for c in self.cameras if c.enabled)
        i = self.inputs
        assert i.worker_safety_input and i.visual_inspection_input, "filled in at build"
        return (CameraConfig(name=WORKER_SAFETY, input=i.worker_safety_input, roles=(SAFETY,),
                             zones=self.safety.zones),
                CameraConfig(name=VISUAL_INSPECTION, input=i.visual_inspection_input,
                             roles=(INSPECTION,)))

    def stream(self, camera: CameraConfig) -> StreamConfig:
        """How a camera's frames are read: its input, at the run's pace."""
        return StreamConfig(camera.name, camera.input, self.inputs.realtime, self.loop,
                            self.inputs.stall_seconds, self.inputs.max_frames)

    def with_flags(self, **flags: Any) -> Settings:
        """A copy with some flag keys changed (checked), for tests and the benchmark."""
        return _assemble(_flags_to_sections(self), flags, self.config, self.zones_from_csv)

    def value(self, key: str) -> Any:
        """The value of a flag key, wherever its section keeps it."""
        return getattr(getattr(self, FLAG_HOME[key]), key)


# --- reading the config file ------------------------------------------------------------


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's flag keys (paths made absolute) and its ``zones``, each checked."""
    text = read_user_text(path, "config file", "pass an existing file to --config", ConfigError)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    where = str(path)
    out: dict[str, Any] = {}
    for written, value in data.items():
        key = ALIASES.get(written, written)
        if key == "cameras":
            out["cameras"] = _cameras(value, where, path.parent)
            continue
        if key in TABLES:
            out.update(_table(key, value, where, path.parent))
            continue
        if key not in FLAG_HOME:
            raise ConfigError(f"{where}: {_unknown_top_level(key)}")
        checked = check_value(key, value, where)
        out[key] = _resolve(key, checked, path.parent)
    return out


def _table(name: str, value: Any, where: str, base: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{name}' must be a table ([{name}] or [[{name}.zones]])")
    unknown = sorted(set(value) - TABLES[name])
    if unknown:
        known = ", ".join(f"{name}.{k}" for k in sorted(TABLES[name]))
        raise ConfigError(f"{where}: unknown key '{name}.{unknown[0]}' (known: {known})"
                          f"{_belongs(unknown[0])}")
    if name != "safety":
        return {k: _resolve(k, check_value(k, v, f"{where}: [{name}]"), base)
                for k, v in value.items()}
    zones = value.get("zones", [])
    if not isinstance(zones, list) or not all(isinstance(z, dict) for z in zones):
        raise ConfigError(f"{where}: safety.zones must be [[safety.zones]] tables")
    return {"zones": parse_zone_tables(zones, where)}


def _cameras(value: Any, where: str, base: Path) -> tuple[CameraConfig, ...]:
    """``[cameras.NAME]`` tables, each checked, paths taken from the config's folder."""
    if not isinstance(value, dict) or not all(isinstance(t, dict) for t in value.values()):
        raise ConfigError(f"{where}: 'cameras' must be [cameras.NAME] tables")
    if not 1 <= len(value) <= MAX_CAMERAS:
        raise ConfigError(f"{where}: a station has 1 to {MAX_CAMERAS} cameras, the file "
                          f"defines {len(value)}")
    cameras = []
    for name, table in value.items():
        label = f"[cameras.{name}]"
        unknown = sorted(set(table) - CAMERA_KEYS)
        if unknown:
            near = difflib.get_close_matches(unknown[0], CAMERA_KEYS, n=1)
            hint = f" (did you mean {near[0]}?)" if near else _belongs(unknown[0])
            raise ConfigError(f"{where}: {label}: unknown key '{unknown[0]}'{hint}; known: "
                              + ", ".join(sorted(CAMERA_KEYS)))
        for kind in SHAPE_TABLES:
            tables = table.get(kind, [])
            if not isinstance(tables, list) or not all(isinstance(z, dict) for z in tables):
                raise ConfigError(f"{where}: {label}: {kind} must be [[cameras.{name}.{kind}]] "
                                  "tables")
        fields = {k: v for k, v in table.items() if k not in SHAPE_TABLES}
        try:
            camera = CameraConfig.model_validate({"name": name, **fields})
        except ValidationError as exc:
            error = exc.errors()[0]
            key = str(error["loc"][0]) if error["loc"] else ""
            shown = "***" if key == "input" and "@" in str(error.get("input")) else (
                repr(error.get("input")))
            raise ConfigError(f"{where}: {label}: '{key}' must be {_reason(error)}, got "
                              f"{shown}") from None
        update: dict[str, Any] = {"zones": parse_zone_tables(
            table.get("zones", []), f"{where}: {label}", header=f"[[cameras.{name}.zones]]")}
        for kind, model in (("lines", LineSpec), ("presence", PresenceSpec)):
            update[kind] = parse_shape_tables(table.get(kind, []), model,
                                         f"{where}: [[cameras.{name}.{kind}]]")
        if not _is_device_or_url(camera.input):
            update["input"] = str(_in_folder(Path(camera.input), base))
        for key in CAMERA_FILE_KEYS:
            if getattr(camera, key) is not None:
                update[key] = _in_folder(getattr(camera, key), base)
        if camera.safety and not update["zones"]:
            raise ConfigError(f"{where}: {label} has the safety role but no keep-out zones: "
                              f"add [[cameras.{name}.zones]] tables, or make its roles "
                              '["inspection"]')
        _check_reject(camera, update["lines"], f"{where}: {label}")
        if not camera.roles and not update["presence"]:
            raise ConfigError(f"{where}: {label} has no roles and no presence checks: give it "
                              'roles = ["safety"] or ["inspection"], or '
                              f"[[cameras.{name}.presence]] tables")
        cameras.append(camera.model_copy(update=update))
    if not any(c.enabled for c in cameras):
        raise ConfigError(f"{where}: every camera has enabled = false; enable at least one")
    return tuple(cameras)


def _check_reject(camera: CameraConfig, lines: tuple[LineSpec, ...], where: str) -> None:
    """A reject signal needs verdicts, and its line must be one of the camera's."""
    if camera.reject_line is not None and not camera.reject:
        raise ConfigError(f"{where}: reject_line is set but reject is not: add reject = true")
    if camera.reject and not camera.inspection:
        raise ConfigError(f"{where}: reject needs the inspection role (objects with "
                          'verdicts): add "inspection" to its roles, or drop reject')
    names = [line.name for line in lines]
    if camera.reject_line is not None and camera.reject_line not in names:
        known = ", ".join(names) or "none: add a [[cameras." + camera.name + ".lines]] table"
        raise ConfigError(f"{where}: reject_line '{camera.reject_line}' is not one of its "
                          f"lines ({known})")


def _in_folder(path: Path, base: Path) -> Path:
    p = path.expanduser()
    return p if p.is_absolute() else (base / p).resolve()


Shape = TypeVar("Shape", LineSpec, PresenceSpec)


def parse_shape_tables(tables: list[dict[str, Any]], model: type[Shape], where: str
                  ) -> tuple[Shape, ...]:
    """Line or presence tables, each checked, their names unique on the camera."""
    out: list[Shape] = []
    keys = frozenset(model.model_fields)
    for i, table in enumerate(tables, start=1):
        label = f"{where} {i}" + (f" '{table['name']}'" if isinstance(table.get("name"), str)
                                   else "")
        unknown = sorted(set(table) - keys)
        if unknown:
            near = difflib.get_close_matches(unknown[0], keys, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{label}: unknown key '{unknown[0]}'{hint}; known: "
                              + ", ".join(sorted(keys)))
        try:
            spec = model.model_validate(table)
        except ValidationError as exc:
            raise ConfigError(f"{label}: {_zone_reason(exc)}") from None
        if any(s.name == spec.name for s in out):
            raise ConfigError(f"{label}: the name is used twice; names must be unique")
        out.append(spec)
    return tuple(out)


def parse_zone_tables(tables: list[dict[str, Any]], where: str,
                      header: str = "[[safety.zones]]") -> tuple[ZoneSpec, ...]:
    """Zone tables as zone specs; geometry is checked once the size is known."""
    specs: list[ZoneSpec] = []
    seen: set[str] = set()
    for i, table in enumerate(tables, start=1):
        label = zone_label(table, i)
        unknown = sorted(set(table) - ZONE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: {label}: {_unknown_zone_key(unknown[0], i, header)}")
        try:
            spec = ZoneSpec.model_validate(table)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {label}: {_zone_reason(exc)}") from None
        if spec.name in seen:
            raise ConfigError(f"{where}: {label}: the name is used twice; zone names must be "
                              "unique")
        seen.add(spec.name)
        specs.append(spec)
    return tuple(specs)


def _zone_reason(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = str(error["loc"][0]) if error["loc"] else ""
    reason = _reason(error)
    if key == "name" and error["type"] != "value_error":
        return "needs a name (a non-empty string)"
    if isinstance((error.get("ctx") or {}).get("error"), SentenceError):
        return reason
    if error["type"] == "value_error":
        return f"{key} must be {reason}, got {error.get('input')!r}"
    return f"{key} {reason}, got {error.get('input')!r}"


def _unknown_top_level(key: str) -> str:
    near = difflib.get_close_matches(key, [*FLAG_HOME, *TABLES], n=1)
    if near:
        return f"unknown key '{key}' (did you mean {near[0]}?)"
    return f"unknown key '{key}'{_belongs(key)}"


def _unknown_zone_key(key: str, index: int, header: str) -> str:
    known = "known: " + ", ".join(sorted(ZONE_KEYS))
    if key in FLAG_HOME:
        return (f"unknown key '{key}'; '{key}' is a top-level setting: TOML puts every key "
                f"written after a {header} header into that zone (here zone {index}), "
                f"so move it above the first {header}")
    near = difflib.get_close_matches(key, ZONE_KEYS, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    return f"unknown key '{key}'{hint}; {known}"


def _belongs(key: str) -> str:
    if key in FLAG_HOME:
        return f"; '{key}' is a top-level setting: write it above every [table]"
    for table, keys in TABLES.items():
        if key in keys:
            return f"; it belongs in [{table}]"
    return ""


def _resolve(key: str, value: Any, base: Path) -> Any:
    """Paths relative to ``base``; inputs too, unless they are URLs or devices."""
    if key in FILE_KEYS and isinstance(value, Path):
        p = value.expanduser()
        p = p if p.is_absolute() else (base / p).resolve()
        return into_folder(p) if key == "output" else p
    if key in INPUT_KEYS and isinstance(value, str) and not _is_device_or_url(value):
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())
    return value


def _is_device_or_url(value: str) -> bool:
    return "://" in value or value.startswith("/dev/")


# --- building the model -------------------------------------------------------------------


def _flags_to_sections(settings: Settings) -> dict[str, Any]:
    return {key: getattr(getattr(settings, FLAG_HOME[key]), key) for key in FLAG_HOME} | {
        "zones": settings.safety.zones, "cameras": settings.cameras,
    }


def _assemble(
    base: Mapping[str, Any], flags: Mapping[str, Any], config: Path | None, from_csv: bool,
) -> Settings:
    merged = dict(base)
    for key, value in flags.items():
        merged[key] = _resolve(key, check_value(key, value, f"--{key}"), Path.cwd())
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    cameras: tuple[CameraConfig, ...] = merged.pop("cameras", ())
    for key, value in merged.items():
        if key == "zones":
            sections["safety"]["zones"] = value
        elif value is not None or key in flags:
            sections[FLAG_HOME[key]][key] = value
    try:
        return Settings(
            models=ModelsConfig(**sections["models"]),
            tracking=TrackingConfig(**sections["tracking"]),
            inputs=InputsConfig(**sections["inputs"]),
            output=OutputConfig(**sections["output"]),
            recording=RecordingConfig(**sections["recording"]),
            mqtt=MqttConfig(**sections["mqtt"]), http=HttpConfig(**sections["http"]),
            opcua=OpcuaConfig(**sections["opcua"]), modbus=ModbusConfig(**sections["modbus"]),
            window=WindowConfig(**sections["window"]),
            safety=SafetyConfig(**sections["safety"]), log=LogConfig(**sections["log"]),
            cameras=cameras, config=config, zones_from_csv=from_csv,
        )
    except ValidationError as exc:
        raise ConfigError(_reason(exc.errors()[0])) from None


def build_settings(
    flags: Mapping[str, Any],
    config: Path | None,
    *,
    default_config: Path,
    samples: Callable[[str], str],
) -> Settings:
    """Defaults, then the config file (``config``, else ``default_config`` if present), then
    the flags given. ``samples(stream)`` names the sample video of a stream with no input."""
    path = config or (default_config if default_config.is_file() else None)
    from_file = read_config_file(path) if path is not None else {}
    given = {k: v for k, v in flags.items() if v is not None}
    explicit_csv = "keepout_points_path" in given
    from_csv = explicit_csv or not from_file.get("zones")
    base = dict(from_file)
    if from_file.get("cameras"):
        stray = next((k for k in (*INPUT_KEYS, "zones") if k in given or k in from_file), None)
        if stray is not None:
            raise ConfigError(f"{path}: defines [cameras], so '{stray}' does not apply: set "
                              "each camera's input and zones in its [cameras.NAME] table")
    for key in INPUT_KEYS:
        if key not in given and key not in base and not from_file.get("cameras"):
            base[key] = samples(key.removesuffix("_input"))
    if "keepout_points_path" not in base and "keepout_points_path" not in given:
        base["keepout_points_path"] = (
            default_config.parent.parent / default_of("keepout_points_path")
        )
    return _assemble(base, given, path, from_csv)


def load_settings(flags: Mapping[str, Any], config: Path | None = None) -> Settings:
    """The run's settings: ``configs/default.toml`` of the application home unless
    ``config`` names another file; inputs not given are the sample videos."""
    from coral_mfg.config.assets import app_home, load_manifest

    home = app_home()
    manifest = load_manifest()

    def sample(stream: str) -> str:
        return str(manifest.path(manifest.samples[stream], home))

    return build_settings(flags, config, default_config=home / "configs" / "default.toml",
                          samples=sample)
