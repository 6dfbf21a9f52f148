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
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo

from coral_mfg.config.validators import (
    Bind,
    FilePath,
    Flag,
    MqttUrl,
    Name,
    Names,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SentenceError,
    SomeNames,
    Text,
    TopicPrefix,
    UnitFloat,
    one_of,
    redact_url,
)
from coral_mfg.config.zones import ZONE_KEYS, ZoneSpec, zone_label
from coral_mfg.core.errors import ConfigError, read_user_text

ENCODER_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")


class _Section(BaseModel):
    """A frozen table of settings; unknown keys are refused, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelsConfig(_Section):
    """What the inference engine opens: the model files, the device, the CPU layout."""

    detection_model: FilePath | None = None  # None: the first detector present (assets.toml)
    detection_labels: FilePath | None = None  # None: the detector's own labels
    classifier_model: FilePath | None = None  # None: the bundled apple classifier
    classifier_labels: FilePath | None = None
    device: Annotated[str, one_of("auto", "edgetpu", "cpu")] = "auto"
    edgetpu_device: Text | None = None  # None: the first Edge TPU found
    cpu_workers: PositiveInt = 2  # interpreter pairs on the CPU, one per stream (measured best)
    cpu_threads: PositiveInt | None = None  # None: cores / cpu_workers
    worker_threshold: UnitFloat | None = None  # None: the detector's own
    inspection_threshold: UnitFloat | None = None
    #: detector labels whose objects are cropped and graded, checked against its labels file
    inspect_labels: SomeNames = ("apple",)
    #: grades drawn green (others red); empty: the classifier's first grade
    pass_grades: Names = ()
    inference_timeout: PositiveFloat = 5.0  # an invoke taking longer: the worker is restarted
    edgetpu_retry_seconds: PositiveFloat = 30.0  # after a fallback, try the Edge TPU this often


class TrackingConfig(_Section):
    """How detections become objects: duplicates merged, tracks kept through misses."""

    track_low_score: UnitFloat = 0.15  # weaker detections may continue a track, not start one
    track_coast_frames: PositiveInt = 5  # an unseen track is kept (predicted) this many frames
    duplicate_iou: UnitFloat = 0.5  # same class, overlapping this much: one object
    duplicate_inside: UnitFloat = 0.8  # same class, mostly inside another: one object
    anonymize_margin: UnitFloat = 0.1  # the mask covers the box plus this share of its size


class InputsConfig(_Section):
    """The two sources and how they are read."""

    worker_safety_input: Text | None = None  # None: the sample video
    visual_inspection_input: Text | None = None
    realtime: Flag = True
    loop: Flag | None = None  # None: loop with a window, stop at the end headless
    stall_seconds: PositiveFloat = 10.0
    max_frames: NonNegativeInt = 0


class OutputConfig(_Section):
    """The output frame and the files a run writes."""

    width: PositiveInt = 960
    height: PositiveInt = 540
    anonymize: Flag = False
    output: FilePath | None = None  # one recording of this run (H.264, fragmented MP4)
    events: FilePath | None = None
    events_rotate_mb: NonNegativeInt = 0  # start a new event log past this size (0: never)
    events_rotate_daily: Flag = False  # start a new event log each day
    events_keep: PositiveInt = 14  # rotated event logs kept, the oldest deleted first
    station: Name | None = None  # names this station in every event; None: the host name
    snapshot_dir: FilePath | None = None  # None: "snapshots" beside the event log, if any
    snapshot_keepout: Flag = True  # a JPEG of the pane at each keep-out entry
    snapshot_graded: Flag = False  # a JPEG of the pane and the crop of each graded object
    snapshot_keep: PositiveInt = 2000  # snapshots kept, the oldest deleted first
    harvest_dir: FilePath | None = None  # every graded crop as DIR/<grade>/*.jpg; None: off
    harvest_max_mb: PositiveFloat = 2000.0  # harvesting stops when DIR holds this much


class HttpConfig(_Section):
    """The web view; off unless asked for, and on loopback unless told otherwise."""

    http: Bind | None = None  # HOST:PORT; None: off
    http_token: Text | None = None  # needed off loopback; also $CORAL_MFG_HTTP_TOKEN
    http_max_connections: PositiveInt = 64  # more at once get 503 and are closed
    http_max_viewers: PositiveInt = 8  # live video and event streams at once


class MqttConfig(_Section):
    """Events and state to an MQTT broker; the password never appears in a log."""

    mqtt: MqttUrl | None = None  # mqtt://host:1883 or mqtts://host:8883; None: off
    mqtt_prefix: TopicPrefix = "coral_mfg"  # every topic starts with it (one or more levels)
    mqtt_client_id: Text | None = None  # None: coral_mfg-<station>
    mqtt_username: Text | None = None  # also $CORAL_MFG_MQTT_USERNAME
    mqtt_password: Text | None = None  # also $CORAL_MFG_MQTT_PASSWORD
    mqtt_ca_file: FilePath | None = None  # mqtts: the CA to trust (None: the system's)
    mqtt_cert_file: FilePath | None = None  # client certificate, for brokers that ask
    mqtt_key_file: FilePath | None = None
    mqtt_queue: PositiveInt = 1000  # messages waiting for the broker; more are dropped
    mqtt_state_seconds: PositiveFloat = 5.0  # stream state is published this often


class RecordingConfig(_Section):
    """All-shift recording: segment files in a folder, the oldest deleted by retention."""

    record_dir: FilePath | None = None  # None: no segment recording
    segment_minutes: PositiveFloat = 5.0
    keep_gb: PositiveFloat = 50.0  # segments over this total are deleted, oldest first
    keep_days: PositiveFloat = 30.0  # segments older than this are deleted
    min_free_gb: PositiveFloat = 2.0  # below this free space: delete the oldest, and warn
    encoder_preset: Annotated[str, one_of(*ENCODER_PRESETS)] = "veryfast"


class WindowConfig(_Section):
    """The OpenGL window, when there is one."""

    headless: Flag = False
    fullscreen: Flag = False
    screenshot: FilePath | None = None


class SafetyConfig(_Section):
    """Where the keep-out zones come from and how people are tested against them."""

    keepout_points_path: FilePath = Path("configs/keepout_points.csv")
    safety_check_whole_box: Flag = False
    zones: tuple[ZoneSpec, ...] = ()


class LogConfig(_Section):
    """Where the log goes and how much of it."""

    log_level: Annotated[str, one_of("debug", "info", "warning", "error")] = "info"
    log_file: FilePath | None = None


SECTIONS: dict[str, type[_Section]] = {
    "models": ModelsConfig,
    "tracking": TrackingConfig,
    "inputs": InputsConfig,
    "output": OutputConfig,
    "recording": RecordingConfig,
    "mqtt": MqttConfig,
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
                ("record_dir", True), ("snapshot_dir", True), ("harvest_dir", True))
#: Keys whose values may hold a password: never echoed whole.
SECRET_KEYS = frozenset({"mqtt", "mqtt_password", "http_token"})


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
    http: HttpConfig = HttpConfig()
    window: WindowConfig = WindowConfig()
    safety: SafetyConfig = SafetyConfig()
    log: LogConfig = LogConfig()
    config: Path | None = None  # the config file these came from, if any
    zones_from_csv: bool = True  # the legacy CSV is the zone (no zones in the config, or flag)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.window.headless and self.window.screenshot is not None:
            raise ValueError("--screenshot needs the window: drop --headless, or drop "
                             "--screenshot and record with --output")
        inputs = {Path(p).resolve() for p in (self.inputs.worker_safety_input,
                                             self.inputs.visual_inspection_input)
                  if p is not None and not _is_device_or_url(p)}
        for key in ("output", "events", "record_dir", "harvest_dir"):
            path = self.value(key)
            if path is not None and path.resolve() in inputs:
                raise ValueError(f"--{key} {path} is an input video and would be overwritten; "
                                 f"pass another path to --{key}")
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

    def stream(self, name: str) -> StreamConfig:
        spec = getattr(self.inputs, f"{name}_input")
        assert spec is not None, "inputs are filled in by build_settings"
        return StreamConfig(name, spec, self.inputs.realtime, self.loop,
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
    for key, value in data.items():
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


def parse_zone_tables(tables: list[dict[str, Any]], where: str) -> tuple[ZoneSpec, ...]:
    """``[[safety.zones]]`` tables as zone specs; geometry is checked once the size is known."""
    specs: list[ZoneSpec] = []
    seen: set[str] = set()
    for i, table in enumerate(tables, start=1):
        label = zone_label(table, i)
        unknown = sorted(set(table) - ZONE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: {label}: {_unknown_zone_key(unknown[0], i)}")
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


def _unknown_zone_key(key: str, index: int) -> str:
    known = "known: " + ", ".join(sorted(ZONE_KEYS))
    if key in FLAG_HOME:
        return (f"unknown key '{key}'; '{key}' is a top-level setting: TOML puts every key "
                f"written after a [[safety.zones]] header into that zone (here zone {index}), "
                "so move it above the first [[safety.zones]]")
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
        return p if p.is_absolute() else (base / p).resolve()
    if key in INPUT_KEYS and isinstance(value, str) and not _is_device_or_url(value):
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())
    return value


def _is_device_or_url(value: str) -> bool:
    return "://" in value or value.startswith("/dev/")


# --- building the model -------------------------------------------------------------------


def _flags_to_sections(settings: Settings) -> dict[str, Any]:
    return {key: getattr(getattr(settings, FLAG_HOME[key]), key) for key in FLAG_HOME} | {
        "zones": settings.safety.zones
    }


def _assemble(
    base: Mapping[str, Any], flags: Mapping[str, Any], config: Path | None, from_csv: bool,
) -> Settings:
    merged = dict(base)
    for key, value in flags.items():
        merged[key] = _resolve(key, check_value(key, value, f"--{key}"), Path.cwd())
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
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
            window=WindowConfig(**sections["window"]),
            safety=SafetyConfig(**sections["safety"]), log=LogConfig(**sections["log"]),
            config=config, zones_from_csv=from_csv,
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
    for key in INPUT_KEYS:
        if key not in given and key not in base:
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
