"""The checks every setting and every zone key goes through, stated once.

A check returns the value it accepts or raises :class:`ValueError` with what
the key *must be* ("a positive whole number"); the schema that uses it puts
the key and the value around it, so a flag, a config key and a zone key fail
with the same words. :class:`SentenceError` is a reason that stands on its own
("needs at least 3 points, found 2").
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import PlainValidator

from coral_mfg.core.files import into_folder
from coral_mfg.core.names import name_problem, prefix_problem


class SentenceError(ValueError):
    """A reason that is a whole sentence, not what a key must be."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_int(value: Any) -> int:
    if not _number(value) or not isinstance(value, int) or value <= 0:
        raise ValueError("a positive whole number")
    return value


def non_negative_int(value: Any) -> int:
    if not _number(value) or not isinstance(value, int) or value < 0:
        raise ValueError("a whole number >= 0")
    return value


def frames(value: Any) -> int:
    if not _number(value) or not isinstance(value, int) or value < 1:
        raise ValueError("a whole number >= 1")
    return value


def positive_number(value: Any) -> float:
    if not _number(value) or not 0 < value < 1e9:
        raise ValueError("a number > 0")
    return float(value)


def unit_float(value: Any) -> float:
    if not _number(value) or not 0.0 <= value <= 1.0:
        raise ValueError("a number from 0 to 1")
    return float(value)


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    return Path(text(value))


def recording_path(value: Any) -> Path:
    """A recording's file; written as a folder (``out/``), a new file in that folder."""
    if isinstance(value, str) and value.endswith(("/", os.sep)):
        return into_folder(Path(value), said_folder=True)
    return path(value)


def name(value: Any) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return str(value)


def camera_name(value: Any) -> str:
    """A camera's name names its folders, its web address and its topics: letters (of any
    script), digits, ``-`` and ``_`` only, so it is the same everywhere."""
    problem = name_problem(value)
    if problem is None and not all(c.isalnum() or c in "-_" for c in str(value)):
        problem = "letters, digits, '-' and '_' only (it names folders and web addresses)"
    if problem is not None:
        raise ValueError(problem)
    return str(value)


def zone_name(value: Any) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise SentenceError(f"needs {problem}")
    return str(value)


def topic_prefix(value: Any) -> str:
    problem = prefix_problem(text(value))
    if problem is not None:
        raise ValueError(problem)
    return str(value).strip("/")


def names(value: Any) -> tuple[str, ...]:
    """A list of names, or one string of comma-separated names (as a flag gives them)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("a list of names, or names separated by commas")
    return tuple(dict.fromkeys(i.strip() for i in items if i.strip()))


def some_names(value: Any) -> tuple[str, ...]:
    found = names(value)
    if not found:
        raise ValueError("at least one name")
    return found


def choice(*choices: str, fold_case: bool = False) -> Callable[[Any], str]:
    """One of ``choices`` (in any case with ``fold_case``): said as "'a' or 'b'" for two,
    "one of a, b, c" for more."""
    said = (" or ".join(f"'{c}'" for c in choices) if len(choices) == 2
            else "one of " + ", ".join(choices))

    def check(value: Any) -> str:
        if fold_case and isinstance(value, str):
            value = value.lower()
        if value not in choices:
            raise ValueError(said)
        return str(value)

    return check


def points(value: Any) -> tuple[tuple[float, float], ...]:
    """Three or more ``[x, y]`` pairs of finite numbers."""
    if not isinstance(value, list | tuple):
        raise SentenceError(f"points must be a list of [x, y] pairs, got {value!r}")
    out = []
    for i, p in enumerate(value, start=1):
        if not isinstance(p, list | tuple) or len(p) != 2 or not all(_number(c) for c in p):
            raise SentenceError(f"point {i} must be two numbers [x, y], got {p!r}")
        if not all(math.isfinite(c) for c in p):
            raise SentenceError(f"point {i} must be finite numbers, got {p!r}")
        out.append((float(p[0]), float(p[1])))
    if len(out) < 3:
        raise SentenceError(f"needs at least 3 points, found {len(out)}")
    return tuple(out)


def two_points(value: Any) -> tuple[tuple[float, float], ...]:
    """A line's two ``[x, y]`` ends, distinct."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise SentenceError(f"points must be two [x, y] ends, got {value!r}")
    ends = points([*value, [0, 0]])[:2]  # the pairs checked as a zone's are
    if ends[0] == ends[1]:
        raise SentenceError("points must be two different ends")
    return ends


def direction_names(value: Any) -> tuple[str, str]:
    """Two names for a line's directions: the first for crossing to the right of the line
    as seen from its first point, the second for the way back."""
    if (not isinstance(value, list | tuple) or len(value) != 2
            or any(name_problem(v) is not None for v in value) or value[0] == value[1]):
        raise ValueError("two different names, e.g. [\"in\", \"out\"]")
    return (str(value[0]), str(value[1]))


def size(value: Any) -> tuple[int, int]:
    if (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return (int(value[0]), int(value[1]))
    raise ValueError("[width, height] in whole pixels")


def color(value: Any) -> str:
    if isinstance(value, str) and len(value) == 7 and value.startswith("#"):
        try:
            int(value[1:], 16)
            return value.lower()
        except ValueError:
            pass
    raise ValueError("'#rrggbb'")


# --- addresses ----------------------------------------------------------------------------


def parse_bind(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (loopback) or ``[v6]:PORT``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(value: Any) -> str:
    checked = text(value)
    parse_bind(checked)
    return checked


def userinfo(url: str) -> str | None:
    """The ``user:password`` part of a URL, or None: everything between ``://`` and the
    last ``@``, so a password holding ``@``, ``/`` or ``:`` is found whole, whether or
    not the URL is valid."""
    _, sep, rest = url.partition("://")
    at = rest.rfind("@")
    return rest[:at] if sep and at >= 0 else None


def redact_url(url: str) -> str:
    """The URL with its password replaced by stars; the user and the host stay."""
    found = userinfo(url)
    if found is None:
        return url
    scheme, _, rest = url.partition("://")
    user, colon, _ = found.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{rest[len(found) + 1:]}"


def mqtt_url(value: Any) -> str:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]``; a user and password may be in it."""
    checked = text(value)
    found = userinfo(checked)
    if found is not None and any(c in found for c in "/?#"):
        raise ValueError("a URL like mqtt://user:password@host:1883 (the user or password "
                         "holds '/', '?' or '#': write them as %2F, %3F and %23, or give the "
                         "password as mqtt_password or $CORAL_MFG_MQTT_PASSWORD)")
    try:
        url = urlsplit(checked)
        port = url.port
    except ValueError:
        raise ValueError("a URL like mqtt://host:1883 (the port is not a number)") from None
    if url.scheme not in ("mqtt", "mqtts"):
        raise ValueError("a URL like mqtt://host:1883 or mqtts://host:8883 (scheme "
                         f"'{url.scheme or 'none'}' is not mqtt or mqtts)")
    if not url.hostname:
        raise ValueError("a URL like mqtt://host:1883 (no host in it)")
    if port == 0:
        raise ValueError("a URL like mqtt://host:1883 (port 0)")
    return checked


def opcua_url(value: Any) -> str:
    """``opc.tcp://HOST:PORT`` (the port defaults to 4840): where the OPC UA server listens."""
    checked = text(value)
    try:
        url = urlsplit(checked)
        port = url.port
    except ValueError:
        raise ValueError("a URL like opc.tcp://127.0.0.1:4840 (the port is not a number)"
                         ) from None
    if url.scheme != "opc.tcp":
        raise ValueError("a URL like opc.tcp://127.0.0.1:4840 (scheme "
                         f"'{url.scheme or 'none'}' is not opc.tcp)")
    if not url.hostname:
        raise ValueError("a URL like opc.tcp://127.0.0.1:4840 (no host in it)")
    if port == 0 or url.username or url.password:
        raise ValueError("a URL like opc.tcp://127.0.0.1:4840 (no port 0, no user in it: "
                         "users go in the [opcua] table)")
    return checked


def opcua_bind(url: str) -> tuple[str, int]:
    """(host, port) of an ``opc.tcp://`` URL checked by :func:`opcua_url`."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    return parts.hostname, parts.port or 4840


# --- the types the schemas use ------------------------------------------------------------

PositiveInt = Annotated[int, PlainValidator(positive_int)]
NonNegativeInt = Annotated[int, PlainValidator(non_negative_int)]
Frames = Annotated[int, PlainValidator(frames)]
PositiveFloat = Annotated[float, PlainValidator(positive_number)]
UnitFloat = Annotated[float, PlainValidator(unit_float)]
Text = Annotated[str, PlainValidator(text)]
Flag = Annotated[bool, PlainValidator(boolean)]
FilePath = Annotated[Path, PlainValidator(path)]
#: A file to record into, or a folder for a new file per run.
RecordingPath = Annotated[Path, PlainValidator(recording_path)]
MqttUrl = Annotated[str, PlainValidator(mqtt_url)]
Bind = Annotated[str, PlainValidator(bind)]
OpcuaUrl = Annotated[str, PlainValidator(opcua_url)]
Names = Annotated[tuple[str, ...], PlainValidator(names)]
SomeNames = Annotated[tuple[str, ...], PlainValidator(some_names)]
Name = Annotated[str, PlainValidator(name)]
CameraName = Annotated[str, PlainValidator(camera_name)]
TopicPrefix = Annotated[str, PlainValidator(topic_prefix)]
Points = Annotated[tuple[tuple[float, float], ...], PlainValidator(points)]
TwoPoints = Annotated[tuple[tuple[float, float], ...], PlainValidator(two_points)]
Directions = Annotated[tuple[str, str], PlainValidator(direction_names)]
Size = Annotated[tuple[int, int], PlainValidator(size)]
Color = Annotated[str, PlainValidator(color)]
ZoneName = Annotated[str, PlainValidator(zone_name)]


def one_of(*choices: str, fold_case: bool = False) -> PlainValidator:
    return PlainValidator(choice(*choices, fold_case=fold_case))
