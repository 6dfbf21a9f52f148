"""Settings: built-in defaults, laid under a TOML config file, laid under the CLI.

Config keys are the CLI's option names (underscore form), so one table of
options describes both, and every value is checked with a message naming the
file, the key and what is expected.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_mfg.errors import ConfigError, read_user_text


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("a positive whole number")
    return value


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("a whole number >= 0")
    return value


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError("a number > 0")
    return float(value)


def _unit_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError("a number from 0 to 1")
    return float(value)


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return str(value)

    return check


@dataclass(frozen=True)
class Option:
    check: Callable[[Any], Any]
    default: Any
    path: bool = False  # resolved against the config file's folder


#: Every setting the CLI and the config file share. ``None`` defaults are
#: filled at start-up (sample videos, preferred detector, its thresholds).
OPTIONS: dict[str, Option] = {
    "worker_safety_input": Option(_string, None),
    "visual_inspection_input": Option(_string, None),
    "detection_model": Option(_string, None, path=True),
    "detection_labels": Option(_string, None, path=True),
    "classifier_model": Option(_string, None, path=True),
    "classifier_labels": Option(_string, None, path=True),
    "device": Option(_choice("auto", "edgetpu", "cpu"), "auto"),
    "edgetpu_device": Option(_string, None),
    "cpu_threads": Option(_positive_int, None),
    "width": Option(_positive_int, 960),
    "height": Option(_positive_int, 540),
    "worker_threshold": Option(_unit_float, None),
    "inspection_threshold": Option(_unit_float, None),
    "keepout_points_path": Option(_string, "configs/keepout_points.csv", path=True),
    "safety_check_whole_box": Option(_boolean, False),
    "anonymize": Option(_boolean, False),
    "headless": Option(_boolean, False),
    "fullscreen": Option(_boolean, False),
    "screenshot": Option(_string, None),
    "realtime": Option(_boolean, True),
    "loop": Option(_boolean, None),
    "max_frames": Option(_non_negative_int, 0),
    "output": Option(_string, None),
    "events": Option(_string, None),
    "log_level": Option(_choice("debug", "info", "warning", "error"), "info"),
    "log_file": Option(_string, None, path=True),
    "stall_seconds": Option(_positive_number, 10.0),
}


def check_value(key: str, value: Any, where: str) -> Any:
    try:
        return OPTIONS[key].check(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: '{key}' must be {exc}, got {value!r}") from None


def _is_url(value: str) -> bool:
    return "://" in value


def _resolve(value: str, base: Path) -> str:
    if _is_url(value) or value.startswith("/dev/"):
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p))


def read_config(path: Path) -> dict[str, Any]:
    """Checked settings from a TOML file; relative paths are taken from its folder."""
    text = read_user_text(path, "config file", "pass an existing file to --config", ConfigError)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return check_settings(data, str(path), path.parent)


def check_settings(data: Mapping[str, Any], where: str, base: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "safety":
            out["zones"] = _safety_table(value, where)
            continue
        if key not in OPTIONS:
            near = difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
        checked = check_value(key, value, where)
        if OPTIONS[key].path and isinstance(checked, str):
            checked = _resolve(checked, base)
        out[key] = checked
    # inputs are paths too, but also devices and URLs
    for key in ("worker_safety_input", "visual_inspection_input"):
        if key in out:
            out[key] = _resolve(out[key], base)
    return out


def _safety_table(value: Any, where: str) -> list[Any]:
    """The raw ``[[safety.zones]]`` list; zones are checked once the frame size is known."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: 'safety' must be a table ([safety] or [[safety.zones]])")
    unknown = sorted(set(value) - {"zones"})
    if unknown:
        raise ConfigError(f"{where}: unknown key 'safety.{unknown[0]}' (known: safety.zones)")
    zones = value.get("zones", [])
    if not isinstance(zones, list):
        raise ConfigError(f"{where}: safety.zones must be [[safety.zones]] tables")
    return zones


def layered(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Built-in defaults, then each layer over it; ``None`` in a layer means unset."""
    merged = {k: o.default for k, o in OPTIONS.items()}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None})
    return merged
