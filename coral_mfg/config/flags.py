"""Command-line parsing shared by the run and the sub-commands.

Every flag that is also a setting is checked by the settings model itself, so
``--width 0`` and ``width = 0`` in the config file fail with the same words.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import textwrap
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from pydantic.fields import FieldInfo

from coral_mfg import __version__
from coral_mfg.config.settings import (
    FLAG_HOME,
    SECTIONS,
    Settings,
    check_value,
    flag_extra,
    flag_info,
    load_settings,
)
from coral_mfg.core.errors import UserError


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other user error; flags are never abbreviated
    (``--headles`` is refused with ``--headless`` suggested, not silently taken for it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self._suggestion(message)} "
                     "(see --help)\n")

    def _suggestion(self, message: str) -> str:
        """" (did you mean --x?)" for the first unknown flag that is close to a known one."""
        if not message.startswith("unrecognized arguments: "):
            return ""
        known = [o for o in self._option_string_actions if o.startswith("--")]
        for word in message.removeprefix("unrecognized arguments: ").split():
            name = word.split("=", 1)[0]
            if not name.startswith("--"):
                continue
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            if close:
                return f" (did you mean {close[0]}?)"
        return ""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each flag once, by its own name: the dashed spellings (``--log-level``) and older
    aliases still work but are not listed again, and ``--x``/``--no-x`` is ``--[no-]x``."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=_help_width())

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        name = action.option_strings[0]
        if not name.startswith("--"):  # -h, --help
            return ", ".join(action.option_strings)
        if isinstance(action, argparse.BooleanOptionalAction):
            return f"--[no-]{name.removeprefix('--')}"
        if action.nargs == 0:
            return name
        return f"{name} {self._format_args(action, self._get_default_metavar_for_optional(action))}"


def _help_width() -> int:
    return min(shutil.get_terminal_size().columns, 100) - 2


def flag(parser: argparse._ActionsContainer, name: str, aliases: tuple[str, ...] = (),
         **kwargs: Any) -> None:
    """Add ``--name`` (and its older ``aliases``) with the dashed forms ``--na-me``; unset
    flags stay None."""
    names = []
    for each in (name, *aliases):
        names.append(f"--{each}")
        if "_" in each:
            names.append(f"--{each.replace('_', '-')}")
    parser.add_argument(*names, dest=name, default=None, **kwargs)


def typed(key: str, convert: Callable[[str], Any] = str) -> Callable[[str], Any]:
    """An argparse type that applies the settings model's check of ``key``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}") from None
        try:
            return check_value(key, value, f"--{key}")
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None

    return parse


KEYS_HELP = """\
window keys:
  q, Esc   quit            space  pause / resume
  f        fullscreen      h      show / hide the HUD
  s        save a PNG screenshot of the window
  e        edit keep-out zones: drag a vertex, click an edge to add one,
           right-click a vertex to delete it, n new zone, Tab next zone,
           Ctrl+S save to the zone file, Esc leave edit mode
"""


#: The other sub-commands, for the run's help and for "did you mean".
SUB_COMMANDS = ("run", "fetch-assets", "doctor", "bench", "train-classifier", "train-anomaly",
                "eval-anomaly", "report", "plc-map", "plc-poll")

EXAMPLES = """\
examples:
  coral-mfg                                   the demo: the two sample videos, in a window
  coral-mfg doctor                            check this machine and the run these flags describe
  coral-mfg --headless --output out/          no window; record into out/ (a new file per run)
  CORAL_MFG_HTTP_TOKEN=$(openssl rand -hex 16) \\
  coral-mfg --worker_safety_input /dev/video0 --headless --http 0.0.0.0:8080
                                              a USB camera, watched from another PC's browser
  coral-mfg --worker_safety_input 'rtsp://user:pass@192.168.1.20/stream' --events events.jsonl
  coral-mfg --config configs/site.toml        cameras, zones, MQTT and more in a file
"""


def run_parser(prog: str = "coral-mfg") -> argparse.ArgumentParser:
    """The run's parser: a flag for every setting, made from the settings model."""
    p = Parser(
        prog=prog,
        usage=f"{prog} [--config FILE.toml] [FLAG ...]" if prog != "coral-mfg" else
        "coral-mfg [run|SUB-COMMAND] [--config FILE.toml] [FLAG ...]",
        description=textwrap.fill(
            "Manufacturing inspection for one to eight cameras: worker keep-out zones and "
            "grading of detected objects (apples by default), on Coral Edge TPUs or the CPU. "
            "Without [cameras] tables in the config, the original two streams run. Every flag "
            "is also a config key; flags override the config file, and may be spelled with "
            "dashes (--log-level).", _help_width()),
        epilog=textwrap.fill("sub-commands: " + ", ".join(SUB_COMMANDS) + " (run is the "
                             "default); 'coral-mfg SUB-COMMAND --help' for each.",
                             _help_width()) + "\n\n" + KEYS_HELP + "\n" + EXAMPLES,
    )
    p.add_argument("--version", action="version", version=f"coral-mfg {__version__}")
    p.add_argument("--config", metavar="FILE.toml",
                   help="settings file (default configs/default.toml); flags override it")
    setting_flags(p)
    return p


def setting_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for each setting, grouped by section, with the help, metavar, default and
    aliases its field declares (see ``config.settings.setting``)."""
    for section in SECTIONS.values():
        group = parser.add_argument_group(section.title)
        for key in section.model_fields:
            extra = flag_extra(key) if key in FLAG_HOME else {"kind": "none"}
            kind = extra.get("kind", "value")
            if kind == "none":
                continue
            info = flag_info(key)
            helped = str(info.description or "") + _default_note(info.default, kind)
            aliases = tuple(extra.get("aliases") or ())
            if kind == "switch":
                flag(group, key, aliases, action="store_const", const=True, help=helped)
            elif kind == "toggle":
                flag(group, key, aliases, action=argparse.BooleanOptionalAction, help=helped)
            else:
                flag(group, key, aliases, type=typed(key, _scalar(info)),
                     metavar=extra.get("metavar"), help=helped)


def _default_note(default: Any, kind: str) -> str:
    if kind in ("switch", "toggle"):
        return f" (default {'on' if default else 'off'})" if default is not None else ""
    if default is None or default == () or isinstance(default, Path):
        return "" if not isinstance(default, Path) else f" (default {default})"
    if isinstance(default, tuple):
        return f" (default {','.join(map(str, default))})"
    return f" (default {default:g})" if isinstance(default, float) else f" (default {default})"


def _scalar(info: FieldInfo) -> Callable[[str], Any]:
    """How a flag's text becomes the value the model checks: int or float for numbers,
    the text itself for everything else (paths, names, lists of names, choices)."""
    kinds = set()
    for candidate in _leaves(info.annotation):
        kinds.add(candidate)
    if int in kinds:
        return int
    if float in kinds:
        return float
    return str


def _leaves(annotation: Any) -> list[Any]:
    """The plain types inside an annotation: ``Annotated[int, ...] | None`` gives int."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _leaves(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _leaves(arg)]
    return [annotation]


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Defaults, then the config file, then the flags given on the command line."""
    flags = {k: v for k, v in vars(args).items() if k in FLAG_HOME}
    return load_settings(flags, Path(args.config).expanduser() if args.config else None)
