"""A station's cameras: one to eight, each with its own input, roles, zones and checks.

Written as ``[cameras.NAME]`` tables in the config file; without them, the
original demo's two streams are the cameras: ``worker_safety`` (safety, the
top-level zones) and ``visual_inspection`` (inspection), from their flags.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from coral_mfg.config.validators import (
    CameraName,
    FilePath,
    Flag,
    Names,
    PositiveFloat,
    PositiveInt,
    SomeNames,
    Text,
    UnitFloat,
    ZoneName,
)
from coral_mfg.config.zones import LineSpec, PresenceSpec, ZoneSpec

SAFETY, INSPECTION = "safety", "inspection"
ROLES = (SAFETY, INSPECTION)
MAX_CAMERAS = 8
#: The original demo's two streams, and their roles.
WORKER_SAFETY, VISUAL_INSPECTION = "worker_safety", "visual_inspection"


def _roles(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if (not isinstance(items, list | tuple)
            or not all(isinstance(r, str) and r in ROLES for r in items)):
        raise ValueError('a list of roles: ["safety"], ["inspection"], both, or [] for a '
                         "camera with presence checks only")
    return tuple(dict.fromkeys(items))


Roles = Annotated[tuple[str, ...], PlainValidator(_roles)]


class CameraConfig(BaseModel):
    """One camera, as its ``[cameras.NAME]`` table says; unset checks take the station's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: CameraName = Field(
        description="the table's name: letters, digits, `-` and `_`; it names the camera in "
        "events, topics, folders and file names")
    input: Text = Field(description="video file, `/dev/videoN`, or an `rtsp://` / `http(s)://` "
                        "URL (a user and password may be in it)")
    roles: Roles = Field((SAFETY,), description='`["safety"]` (people against keep-out '
                         'zones), `["inspection"]` (objects graded) or both')
    enabled: Flag = Field(True, description="`false` keeps the camera in the file, not run")
    worker_threshold: UnitFloat | None = Field(
        None, description="minimum person score (default: the station's)")
    inspection_threshold: UnitFloat | None = Field(
        None, description="minimum score of an inspected object (default: the station's)")
    inspect_labels: SomeNames | None = Field(
        None, description="detector labels graded on this camera (default: the station's)")
    pass_grades: Names | None = Field(
        None, description="grades drawn green (default: the station's)")
    classifier_model: FilePath | None = Field(
        None, description="a classifier of its own (default: the station's, co-compiled with "
        "the detector)")
    classifier_labels: FilePath | None = Field(
        None, description="its labels (default: beside the model, else the station's)")
    classify: Flag | None = Field(
        None, description="`false`: no classifier, with an anomaly model the verdict is "
        "normal or anomalous (default: the station's)")
    anomaly: FilePath | None = Field(
        None, description="an anomaly model of its own, from `coral-mfg train-anomaly` "
        "(default: the station's, if any)")
    detect_fps: PositiveFloat | None = Field(
        None, description="at most this many detections a second (default: every frame)")
    motion_gate: Flag = Field(
        False, description="skip detection while the picture does not change (keep it off on "
        "a safety camera: a person standing still must stay seen every frame)")
    motion_area: UnitFloat = Field(
        0.002, description="the share of the picture that must change to count as motion")
    motion_recheck_seconds: PositiveFloat = Field(
        2.0, description="a still picture is checked again at least this often")
    reject: Flag = Field(
        False, description="an inspection camera's reject signal to the PLC: a pulse for each "
        "object whose verdict is a fail (docs/plc.md)")
    reject_line: ZoneName | None = Field(
        None, description="reject as a failing object crosses this line of the camera, in the "
        "line's first direction (default: when its verdict settles, as it leaves the view)")
    reject_pulse_ms: PositiveInt = Field(
        500, description="how long the reject signal stays on: at least two of the PLC's "
        "polling periods")
    zones: tuple[ZoneSpec, ...] = Field((), description="its `[[cameras.NAME.zones]]`")
    lines: tuple[LineSpec, ...] = Field((), description="its `[[cameras.NAME.lines]]`")
    presence: tuple[PresenceSpec, ...] = Field(
        (), description="its `[[cameras.NAME.presence]]`")

    @property
    def safety(self) -> bool:
        return SAFETY in self.roles

    @property
    def inspection(self) -> bool:
        return INSPECTION in self.roles


#: The keys a ``[cameras.NAME]`` table may hold (its name is the table's).
CAMERA_KEYS = frozenset(CameraConfig.model_fields) - {"name"}
#: The tables a camera holds of its own: ``[[cameras.NAME.zones]]`` and the like.
SHAPE_TABLES = ("zones", "lines", "presence")
#: Keys that name files, taken relative to the config file's folder.
CAMERA_FILE_KEYS = ("classifier_model", "classifier_labels", "anomaly")
