"""Keep-out zones: their schema, their geometry, and the test of person boxes against them.

A zone is written once, as a :class:`ZoneSpec` (a ``[[safety.zones]]`` table or
the original demo's CSV), and placed on the output frame as a
:class:`KeepoutZone`. Points are relative to the worker-safety picture (0-1),
or pixels of a frame of ``frame_size``, so a zone stays on its floor marking
whatever the output size.

Boxes are tested by true geometric intersection (shapely), vectorized over
all boxes of a frame. In ``bottom`` mode the box's bottom edge (the feet) must
touch or cross the zone, so a zone lying between the feet still counts; in
``whole_box`` mode any overlap counts.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import shapely
from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from coral_mfg.errors import ConfigError, read_user_text
from coral_mfg.geometry import Rect, from_rect, to_rect
from coral_mfg.names import name_problem


class ZoneMode(StrEnum):
    """Which part of a person counts: the feet (high camera) or the whole box (overhead)."""

    BOTTOM = "bottom"
    WHOLE_BOX = "whole_box"


Rgb = tuple[int, int, int]
#: The original demo's output frame: its CSV, and pixel zones that name no other size.
REFERENCE_SIZE = (960, 540)
DEBOUNCE_FRAMES = 3
#: The original demo's CSV zone had no debounce, and keeps none.
LEGACY_DEBOUNCE_FRAMES = 1


def _points(value: Any) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"points must be a list of [x, y] pairs, got {value!r}")
    out = []
    for i, p in enumerate(value, start=1):
        if (
            not isinstance(p, list | tuple)
            or len(p) != 2
            or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in p)
        ):
            raise ValueError(f"point {i} must be two numbers [x, y], got {p!r}")
        if not all(np.isfinite(c) for c in p):
            raise ValueError(f"point {i} must be finite numbers, got {p!r}")
        out.append((float(p[0]), float(p[1])))
    if len(out) < 3:
        raise ValueError(f"needs at least 3 points, found {len(out)}")
    return tuple(out)


def _name(value: Any) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(f"needs {problem}")
    return str(value)


def _frames(key: str) -> PlainValidator:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a whole number >= 1, got {value!r}")
        return value

    return PlainValidator(check)


def _size(value: Any) -> tuple[int, int]:
    if (
        isinstance(value, list | tuple) and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"frame_size must be [width, height] in whole pixels, got {value!r}")


def _color(value: Any) -> str:
    if isinstance(value, str) and len(value) == 7 and value.startswith("#"):
        try:
            int(value[1:], 16)
            return value.lower()
        except ValueError:
            pass
    raise ValueError(f"color must be '#rrggbb', got {value!r}")


def _choice(key: str, *choices: str) -> PlainValidator:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{key} must be " + " or ".join(f"'{c}'" for c in choices)
                             + f", got {value!r}")
        return str(value)

    return PlainValidator(check)


class ZoneSpec(BaseModel):
    """One keep-out zone as the user writes it: the only statement of the zone schema.

    Parsing, the editor's save and the README's table all come from these fields.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, PlainValidator(_name)] = Field(
        description="unique; shown on screen, in events and in the summary")
    points: Annotated[tuple[tuple[float, float], ...], PlainValidator(_points)] = Field(
        description="three or more `[x, y]` corners, in `units`")
    units: Annotated[Literal["pixels", "relative"], _choice("units", "pixels", "relative")] = (
        Field("pixels", description="`relative`: 0-1 of the picture; `pixels`: pixels of a "
              "`frame_size` frame"))
    frame_size: Annotated[tuple[int, int], PlainValidator(_size)] = Field(
        REFERENCE_SIZE, description="the `[width, height]` that pixel points refer to; "
        "scaled to the output size (with a note in the log) when it differs")
    mode: Annotated[Literal["bottom", "whole_box"] | None,
                    _choice("mode", "bottom", "whole_box")] = Field(
        None, description="`bottom`: the feet (a camera at a high angle); `whole_box`: any part "
        "of the box (overhead); unset: `--safety_check_whole_box` decides")
    enter_frames: Annotated[int, _frames("enter_frames")] = Field(
        DEBOUNCE_FRAMES, description="in the zone after this many frames in a row inside")
    exit_frames: Annotated[int, _frames("exit_frames")] = Field(
        DEBOUNCE_FRAMES, description="out of it after this many frames in a row outside")
    enabled: Annotated[bool, PlainValidator(lambda v: _bool("enabled", v))] = Field(
        True, description="`false` keeps the zone in the file but checks nobody against it")
    color: Annotated[str, PlainValidator(_color)] = Field(
        "#ff0000", description="`#rrggbb`, as drawn")

    def to_table(self) -> dict[str, Any]:
        """The zone as a TOML table: what the editor writes back."""
        data = {key: _plain(getattr(self, key)) for key in type(self).model_fields}
        if self.units == "relative":
            data.pop("frame_size")
        return {k: v for k, v in data.items() if v is not None}


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


ZONE_KEYS = frozenset(ZoneSpec.model_fields)


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
    """Where a zone came from, so the editor can save it back there."""

    path: Path
    kind: str  # "toml" or "csv"


def _rgb(color: str) -> Rgb:
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


@dataclass(frozen=True, eq=False)
class KeepoutZone:
    """A zone placed on the output frame: what every frame's people are tested against."""

    name: str
    points: npt.NDArray[np.float64]  # (K, 2) in output-frame pixels
    mode: ZoneMode = ZoneMode.BOTTOM
    enter_frames: int = DEBOUNCE_FRAMES
    exit_frames: int = DEBOUNCE_FRAMES
    enabled: bool = True
    color: Rgb = (255, 0, 0)
    spec: ZoneSpec | None = None  # as written, for saving back
    source: ZoneSource | None = None
    polygon: shapely.Polygon = field(init=False)

    def __post_init__(self) -> None:
        polygon = shapely.Polygon(self.points)
        shapely.prepare(polygon)
        object.__setattr__(self, "polygon", polygon)

    def with_points(self, points: npt.NDArray[np.float64]) -> KeepoutZone:
        return replace(self, points=np.asarray(points, np.float64))

    def as_spec(self, picture: Rect) -> ZoneSpec:
        """The zone as written, with its current points in the file's own units."""
        spec = self.spec or ZoneSpec(name=self.name, points=((0, 0), (1, 0), (1, 1)),
                                     units="relative")
        rel = from_rect(self.points, picture)
        pts = rel if spec.units == "relative" else rel * np.array(spec.frame_size, np.float64)
        digits = 4 if spec.units == "relative" else 1
        tidy = tuple((_tidy(round(float(x), digits)), _tidy(round(float(y), digits)))
                     for x, y in pts)
        return spec.model_copy(update={"points": tidy, "name": self.name,
                                       "enabled": self.enabled})

    def contains_boxes(self, xyxy: npt.NDArray[np.number]) -> npt.NDArray[np.bool_]:
        """Which boxes (N, 4 as x1, y1, x2, y2) are in the zone under its mode."""
        if len(xyxy) == 0:
            return np.zeros(0, dtype=bool)
        boxes = np.asarray(xyxy, dtype=np.float64)
        if self.mode is ZoneMode.BOTTOM:
            feet = np.stack(
                [boxes[:, [0, 3]], boxes[:, [2, 3]]], axis=1
            )  # (N, 2 points, 2 coords)
            geoms = shapely.linestrings(feet)
        else:
            geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
        return np.asarray(shapely.intersects(geoms, self.polygon), dtype=bool)


def _tidy(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


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


def relative_points(spec: ZoneSpec, where: str) -> npt.NDArray[np.float64]:
    """The zone's corners as 0-1 fractions of the picture, checked to mean what was meant."""
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


def place_zone(
    spec: ZoneSpec, picture: Rect, whole_box: bool, source: ZoneSource | None, where: str
) -> KeepoutZone:
    """A zone on the output frame, where the worker-safety ``picture`` lies in it.

    ``where`` starts every message: the file, and the zone when the file has several.
    """
    rel = relative_points(spec, where)
    mode = spec.mode or ("whole_box" if whole_box else "bottom")
    return KeepoutZone(spec.name, to_rect(rel, picture), ZoneMode(mode), spec.enter_frames,
                       spec.exit_frames, spec.enabled, _rgb(spec.color), spec, source)


def place_zones(
    specs: tuple[ZoneSpec, ...], picture: Rect, whole_box: bool, source: ZoneSource
) -> tuple[KeepoutZone, ...]:
    """Every zone of one file on the output frame, each checked with a message naming it."""
    path = str(source.path)
    return tuple(
        place_zone(s, picture, whole_box, source,
                   path if source.kind == "csv" else f"{path}: zone '{s.name}'")
        for s in specs
    )
