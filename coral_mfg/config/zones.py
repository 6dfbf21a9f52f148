"""Keep-out zones, counting lines and presence regions as the user writes them: the
schemas, the original demo's CSV, and the checks that the points mean what was meant.

A zone is written once, as a :class:`ZoneSpec` (a ``[[safety.zones]]`` table or
the original demo's CSV). Points are relative to the worker-safety picture
(0-1), or pixels of a frame of ``frame_size``, so a zone stays on its floor
marking whatever the output size. Placing it on the output frame is
:mod:`coral_mfg.analytics.zones`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import shapely
from pydantic import BaseModel, ConfigDict, Field

from coral_mfg.config.validators import (
    Color,
    Directions,
    Flag,
    Frames,
    Points,
    PositiveFloat,
    Size,
    SomeNames,
    TwoPoints,
    ZoneName,
    one_of,
)
from coral_mfg.core.errors import ConfigError, read_user_text
from coral_mfg.core.names import name_problem


class ZoneMode(StrEnum):
    """Which part of a person counts: the feet (high camera) or the whole box (overhead)."""

    BOTTOM = "bottom"
    WHOLE_BOX = "whole_box"


#: The original demo's output frame: its CSV, and pixel zones that name no other size.
REFERENCE_SIZE = (960, 540)
DEBOUNCE_FRAMES = 3
#: The original demo's CSV zone had no debounce, and keeps none.
LEGACY_DEBOUNCE_FRAMES = 1


class ZoneSpec(BaseModel):
    """One keep-out zone as the user writes it: the only statement of the zone schema.

    Parsing, the editor's save and the README's table all come from these fields.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ZoneName = Field(
        description="unique; shown on screen, in events and in the summary")
    points: Points = Field(
        description="three or more `[x, y]` corners, in `units`")
    units: Annotated[Literal["pixels", "relative"], one_of("pixels", "relative")] = (
        Field("pixels", description="`relative`: 0-1 of the picture; `pixels`: pixels of a "
              "`frame_size` frame"))
    frame_size: Size = Field(
        REFERENCE_SIZE, description="the `[width, height]` that pixel points refer to; "
        "scaled to the output size (with a note in the log) when it differs")
    mode: Annotated[Literal["bottom", "whole_box"] | None,
                    one_of("bottom", "whole_box")] = Field(
        None, description="`bottom`: the feet (a camera at a high angle); `whole_box`: any part "
        "of the box (overhead); unset: `--safety_check_whole_box` decides")
    enter_frames: Frames = Field(
        DEBOUNCE_FRAMES, description="in the zone after this many frames in a row inside")
    exit_frames: Frames = Field(
        DEBOUNCE_FRAMES, description="out of it after this many frames in a row outside")
    enabled: Flag = Field(
        True, description="`false` keeps the zone in the file but checks nobody against it")
    color: Color = Field(
        "#ff0000", description="`#rrggbb`, as drawn")
    max_seconds: PositiveFloat | None = Field(
        None, description="a person in the zone longer than this raises a dwell alarm "
        "(`zone_dwell_exceeded`, once per stay); unset: no limit")

    def to_table(self) -> dict[str, Any]:
        """The zone as a TOML table: what the editor writes back."""
        data = {key: _plain(getattr(self, key)) for key in type(self).model_fields}
        if self.units == "relative":
            data.pop("frame_size")
        return {k: v for k, v in data.items() if v is not None}


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


ZONE_KEYS = frozenset(ZoneSpec.model_fields)

Units = Annotated[Literal["pixels", "relative"], one_of("pixels", "relative")]


class LineSpec(BaseModel):
    """A counting line (``[[cameras.NAME.lines]]``): tracked objects crossing it are
    counted once per crossing, in their direction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ZoneName = Field(description="unique on the camera; in events, topics and metrics")
    points: TwoPoints = Field(description="its two ends `[[x, y], [x, y]]`, in `units`")
    units: Units = Field("pixels", description="as a zone's")
    frame_size: Size = Field(REFERENCE_SIZE, description="as a zone's")
    labels: SomeNames | None = Field(
        None, description="detector labels counted (default: the camera's people and its "
        "inspected labels)")
    directions: Directions = Field(
        ("in", "out"), description="names of the two directions: the first is a crossing "
        "to the right of the line as seen from its first point towards its second")
    color: Color = Field("#00c8ff", description="`#rrggbb`, as drawn")
    enabled: Flag = Field(
        True, description="`false` keeps the line in the file but counts nothing on it")


class PresenceSpec(BaseModel):
    """A presence check (``[[cameras.NAME.presence]]``): at least ``expected`` objects of a
    label in a region, or an alarm once the shortfall has lasted ``seconds``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ZoneName = Field(description="unique on the camera; in events, topics and metrics")
    label: ZoneName = Field(description="the detector label looked for, e.g. `bottle`")
    expected: Frames = Field(description="how many should be there (1 or more)")
    points: Points = Field(description="the region: three or more `[x, y]` corners")
    units: Units = Field("pixels", description="as a zone's")
    frame_size: Size = Field(REFERENCE_SIZE, description="as a zone's")
    seconds: PositiveFloat = Field(
        2.0, description="how long a shortfall (or its end) must last before it is "
        "reported: a passing hand or a missed frame is not an alarm")
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="the detector score an object needs to be counted")
    color: Color = Field("#ffc800", description="`#rrggbb`, as drawn")
    enabled: Flag = Field(
        True, description="`false` keeps the check in the file but never raises its alarm")


def zone_label(table: dict[str, Any], index: int) -> str:
    name = table.get("name")
    return f"zone '{name}'" if name_problem(name) is None else f"zone {index}"


def schema_table() -> str:
    """The zone keys as a Markdown table (the README shows it; a test keeps them equal)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, info in ZoneSpec.model_fields.items():
        default = "required" if info.is_required() else _toml_value(info.default)
        rows.append(f"| `{key}` | {default} | {info.description} |")
    return "\n".join(rows)


def _toml_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{list(value)}`".replace(" ", "")
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


@dataclass(frozen=True)
class ZoneSource:
    """Where a zone came from, so the editor can save it back there: a CSV, or a config
    file's ``[[safety.zones]]`` (``camera`` None) or ``[[cameras.NAME.zones]]``."""

    path: Path
    kind: str  # "toml" or "csv"
    camera: str | None = None


def read_points_csv(path: Path) -> npt.NDArray[np.float64]:
    """Zone points from the original demo's CSV: an ``x,y`` header, then one point a row."""
    text = read_user_text(path, "keep-out points file",
                          "pass an x,y CSV to --keepout_points_path", ConfigError)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or [c.strip().lower() for c in rows[0]] != ["x", "y"]:
        raise ConfigError(f"{path}: the first line must be the header 'x,y'")
    points = []
    for line_no, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != 2:
                raise ValueError
            points.append((float(row[0]), float(row[1])))
        except ValueError:
            raise ConfigError(
                f"{path}, line {line_no}: expected two numbers 'x,y', got {','.join(row)!r}"
            ) from None
    if len(points) < 3:
        raise ConfigError(f"{path}: a keep-out zone needs at least 3 points, found {len(points)}")
    arr = np.array(points, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{path}: points must be finite numbers")
    return arr


def csv_spec(path: Path) -> ZoneSpec:
    """The original demo's single zone, in pixels of its 960x540 frame, with no debounce."""
    points = read_points_csv(path)
    problem = name_problem(path.stem)
    if problem is not None:
        raise ConfigError(f"{path}: the file's name names its zone, and needs to be {problem}; "
                          "rename the file")
    return ZoneSpec(name=path.stem, points=tuple(map(tuple, points.tolist())), units="pixels",
                    enter_frames=LEGACY_DEBOUNCE_FRAMES, exit_frames=LEGACY_DEBOUNCE_FRAMES)


def relative_points(spec: ZoneSpec | LineSpec | PresenceSpec, where: str
                    ) -> npt.NDArray[np.float64]:
    """The shape's corners (a line's ends) as 0-1 fractions of the picture, checked to mean
    what was meant."""
    points = np.array(spec.points, np.float64)
    if spec.units == "relative":
        if ((points < 0) | (points > 1)).any():
            raise ConfigError(f"{where}: relative points must be between 0 and 1")
        rel = points
    else:
        w, h = spec.frame_size
        outside = (points[:, 0] < 0) | (points[:, 0] > w) | (points[:, 1] < 0) | (points[:, 1] > h)
        if outside.any():
            x, y = points[int(np.argmax(outside))]
            raise ConfigError(
                f"{where}: point ({x:g}, {y:g}) is outside the {w}x{h} frame the zone's pixels "
                "refer to; move the point, or set frame_size (or units = \"relative\")"
            )
        rel = points / np.array([w, h], np.float64)
    if isinstance(spec, LineSpec):
        return rel
    centred = rel - rel.mean(axis=0)
    if np.linalg.matrix_rank(centred, tol=1e-9) < 2:
        raise ConfigError(f"{where}: the zone polygon has no area (its points are on a line)")
    polygon = shapely.Polygon(points)
    if not polygon.is_valid:
        reason = shapely.is_valid_reason(polygon)
        raise ConfigError(
            f"{where}: the zone polygon crosses itself ({reason}); reorder its points"
        )
    return rel


