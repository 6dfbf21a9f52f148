"""Writing a camera's zones, lines and presence regions back to the file they came from.

A config file is edited, not rewritten: its comments, the order of its tables and
keys, and the way each value was written stay as they were. A shape that is still
there keeps its own table (found by its name, else by its place when it was
renamed) and only the keys that changed are set again; keys at their default are
written only when the table already had them; points stay on one line. A comment
above a deleted shape goes with it; the comment above the next section stays.

The new text is checked as the application reads a config file before it
replaces the old one, atomically (a reader never sees half a file), with the old
file's permissions: a config may hold passwords. The original demo's CSV file
holds one zone's points and nothing else.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import BaseModel
from tomlkit.items import AoT, Comment, Item, Table, Whitespace

from coral_mfg.config.settings import parse_shape_tables, parse_zone_tables
from coral_mfg.config.zones import (
    REFERENCE_SIZE,
    LineSpec,
    PresenceSpec,
    ZoneSource,
    ZoneSpec,
)
from coral_mfg.core.errors import ConfigError
from coral_mfg.core.files import replacing

Spec = ZoneSpec | LineSpec | PresenceSpec
#: The shape kinds a camera holds, their tables' keys, and their schemas.
KINDS: dict[str, type[BaseModel]] = {"zones": ZoneSpec, "lines": LineSpec,
                                     "presence": PresenceSpec}


@dataclass(frozen=True)
class Shapes:
    """One camera's zones, lines and presence regions, as written."""

    zones: tuple[ZoneSpec, ...] = ()
    lines: tuple[LineSpec, ...] = ()
    presence: tuple[PresenceSpec, ...] = ()

    def of(self, kind: str) -> tuple[Spec, ...]:
        found: tuple[Spec, ...] = getattr(self, kind)
        return found


#: What a request may hold: shapes of a kind, and points of a shape.
MAX_SHAPES = 32
MAX_POINTS = 64


def shapes_from_json(data: Any, current: Shapes) -> tuple[Shapes, tuple[str, ...]]:
    """``{"zones": [...], "lines": [...], "presence": [...]}`` from the network: the kinds
    it names replace the ``current`` ones, each table checked as the config file's are
    (one-line :class:`ConfigError` otherwise); the kinds it names, in order."""
    if not isinstance(data, dict):
        raise ConfigError('the body must be a JSON object like {"zones": [...]}')
    unknown = sorted(set(data) - set(KINDS))
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' (known: zones, lines, presence)")
    if not data:
        raise ConfigError('nothing to change: give "zones", "lines" or "presence"')
    found: dict[str, tuple[Spec, ...]] = {k: current.of(k) for k in KINDS}
    for kind in KINDS:
        if kind not in data:
            continue
        tables = data[kind]
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise ConfigError(f'"{kind}" must be a list of objects')
        if len(tables) > MAX_SHAPES:
            raise ConfigError(f'"{kind}": at most {MAX_SHAPES}, got {len(tables)}')
        for i, table in enumerate(tables, start=1):
            points = table.get("points")
            if isinstance(points, list) and len(points) > MAX_POINTS:
                raise ConfigError(f"{kind} {i}: at most {MAX_POINTS} points, got {len(points)}")
        if kind == "zones":
            found[kind] = parse_zone_tables(tables, "zones", header="zone")
        elif kind == "lines":
            found[kind] = parse_shape_tables(tables, LineSpec, kind)
        else:
            found[kind] = parse_shape_tables(tables, PresenceSpec, kind)
    shapes = Shapes(zones=found["zones"], lines=found["lines"],  # type: ignore[arg-type]
                    presence=found["presence"])  # type: ignore[arg-type]
    return shapes, tuple(k for k in KINDS if k in data)


def tidy_points(spec: Spec) -> list[list[float | int]]:
    """The points as written: 4 decimals of relative units, 1 of pixels, whole numbers
    without a decimal point."""
    digits = 4 if spec.units == "relative" else 1
    return [[_tidy(round(float(c), digits)) for c in p] for p in spec.points]


def _tidy(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def plain(value: Any) -> Any:
    """A model value as TOML and JSON take it: tuples as lists."""
    return [plain(v) for v in value] if isinstance(value, tuple | list) else value


def spec_table(spec: Spec, written: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The table of ``spec``, compact: the required keys, the keys that differ from their
    default, and those ``written`` in the file already; unset keys left out."""
    out: dict[str, Any] = {}
    for key, info in type(spec).model_fields.items():
        value = tidy_points(spec) if key == "points" else plain(getattr(spec, key))
        if value is None:
            continue
        if key == "frame_size" and spec.units == "relative" and key not in written:
            continue
        if info.is_required() or key in written or value != plain(info.default):
            out[key] = value
    return out


def write_shapes(source: ZoneSource, shapes: Shapes, kinds: Sequence[str],
                 check: Callable[[Path], object]) -> None:
    """Write the ``kinds`` of ``shapes`` into ``source``, the rest of the file kept.

    ``check(path)`` reads the new file as a run would, raising :class:`ConfigError` if
    it would refuse it; the old file then stays as it was.
    """
    if source.kind == "csv":
        if list(kinds) != ["zones"] or len(shapes.zones) != 1:
            raise ConfigError(f"{source.path} holds one zone's points only: define zones, "
                              "lines and presence regions in the config file to have more")
        _write(source.path, _csv(shapes.zones[0]), check)
        return
    text = source.path.read_text(encoding="utf-8")
    _write(source.path, edited_toml(text, source.camera, shapes, kinds), check)


def edited_toml(text: str, camera: str | None, shapes: Shapes, kinds: Sequence[str]) -> str:
    """``text`` with the ``kinds`` tables of ``camera`` (None: ``[[safety.zones]]``)
    replaced by ``shapes``."""
    try:
        doc = tomlkit.parse(text)
    except Exception as exc:  # tomlkit's errors have no common public base
        raise ConfigError(f"the config file is not valid TOML: {exc}") from None
    if camera is not None:
        cameras = doc.get("cameras")
        container = cameras.get(camera) if isinstance(cameras, dict) else None
        where = f"[cameras.{camera}]"
    else:
        if "safety" not in doc:
            doc.add("safety", tomlkit.table(is_super_table=True))
        container = doc.get("safety")
        where = "[safety]"
    if not isinstance(container, Table):
        raise ConfigError(f"the config file has no {where} table any more")
    for kind in kinds:
        _replace(container, kind, [s for s in shapes.of(kind)])
    return tomlkit.dumps(doc)


def _csv(spec: ZoneSpec) -> str:
    """The zone's points in pixels of the 960x540 frame the CSV's points refer to."""
    sx: float
    sy: float
    if spec.units == "relative":
        sx, sy = REFERENCE_SIZE
    else:
        sx, sy = (REFERENCE_SIZE[0] / spec.frame_size[0], REFERENCE_SIZE[1] / spec.frame_size[1])
    rows = "".join(f"{_tidy(round(x * sx, 1))},{_tidy(round(y * sy, 1))}\n"
                   for x, y in spec.points)
    return "x,y\n" + rows


def _write(path: Path, text: str, check: Callable[[Path], object]) -> None:
    """``text`` into ``path`` at once, once ``check`` took it, with the old permissions."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0o600
    with replacing(path, mode) as tmp:
        tmp.write_text(text, encoding="utf-8")
        try:
            check(tmp)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(str(tmp), str(path))) from None


# --- editing tables in place ------------------------------------------------------------


def _trivia(item: Item) -> bool:
    return isinstance(item, Whitespace | Comment)


def _pop_trailing(table: Table) -> list[Item]:
    """The comments and blank lines at the end of ``table``: in the file they are above
    whatever follows it."""
    body = table.value.body
    out: list[Item] = []
    while body and body[-1][0] is None and _trivia(body[-1][1]):
        out.insert(0, body.pop()[1])
    return out


def _take_heading(container: Table) -> list[Item]:
    """The comment block at the very end of ``container`` (after its last blank line), or
    at the end of its last table: the heading of the section that follows it."""
    last = container
    for _, item in container.value.body:
        if isinstance(item, AoT) and len(item):
            last = item[-1]
    trailing = _pop_trailing(last)
    cut = max((i + 1 for i, t in enumerate(trailing) if isinstance(t, Whitespace)), default=0)
    _add_trivia(last, trailing[:cut])
    if last is not container and not _ends_blank(last):
        last.add(tomlkit.nl())
    return trailing[cut:]


def _add_trivia(table: Table, items: list[Item]) -> None:
    for item in items:
        table.value.body.append((None, item))


def _ends_blank(table: Table) -> bool:
    body = table.value.body
    return bool(body) and body[-1][0] is None and isinstance(body[-1][1], Whitespace)


def _update(table: Table, values: dict[str, Any]) -> None:
    """Set the keys that changed, drop those no longer set, add new ones at the end."""
    for key in [k for k in table if k not in values]:
        del table[key]
    for key, value in values.items():
        if key not in table or plain(_unwrap(table[key])) != value:
            table[key] = value


def _unwrap(value: Any) -> Any:
    return value.unwrap() if isinstance(value, Item) else value


def _fresh(values: dict[str, Any]) -> Table:
    table = tomlkit.table()
    for key, value in values.items():
        table[key] = value
    return table


def _replace(container: Table, kind: str, specs: list[Spec]) -> None:
    """The ``kind`` tables of ``container`` become ``specs``, each old table kept where
    its shape is kept (see the module's docstring)."""
    found = container.get(kind)
    old: list[Table] = list(found) if isinstance(found, AoT) else []
    trailing = [_pop_trailing(t) for t in old]
    above = [[], *trailing[:-1]]  # the comments above each old table but the first
    tail = trailing[-1] if old else []
    if not old and specs:  # new tables go last: the heading of what follows goes after them
        tail = [tomlkit.nl(), *_take_heading(container)]
    names = [str(t.get("name", "")) for t in old]
    wanted = [s.name for s in specs]
    chosen: list[int | None] = [None] * len(specs)
    used: set[int] = set()
    for j, spec in enumerate(specs):  # the same name: the same shape
        if spec.name in names and names.index(spec.name) not in used:
            chosen[j] = names.index(spec.name)
            used.add(names.index(spec.name))
    for j in range(len(specs)):  # renamed: the same place, its old name gone
        if chosen[j] is None and j < len(old) and j not in used and names[j] not in wanted:
            chosen[j] = j
            used.add(j)
    tables: list[Table] = []
    for j, spec in enumerate(specs):
        i = chosen[j]
        if i is None:
            tables.append(_fresh(spec_table(spec)))
            continue
        table = old[i]
        _update(table, spec_table(spec, frozenset(table)))
        if above[i]:
            if tables:
                _add_trivia(tables[-1], above[i])
            else:
                table.value.body[0:0] = [(None, c) for c in above[i] if isinstance(c, Comment)]
        tables.append(table)
    if not tables:
        if kind in container:
            del container[kind]
        _add_trivia(container, [t for t in tail if isinstance(t, Comment)])
        return
    for table in tables[:-1]:
        if not _ends_blank(table):
            table.add(tomlkit.nl())
    if tail:
        _add_trivia(tables[-1], tail)
    elif not old:
        tables[-1].add(tomlkit.nl())
    aot = tomlkit.aot()
    for table in tables:
        aot.append(table)
        table.trivia.indent = ""  # the blank line above is the previous table's
    container[kind] = aot
