"""Command line: the original demo's flags, plus sub-commands.

``coral-mfg [run] [flags]`` runs the inspection; ``fetch-assets``, ``doctor``
and ``bench`` are the other sub-commands. User errors end in one line and exit
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from coral_mfg import __version__
from coral_mfg.assets import ENV_MIRROR, app_home, fetch_all, load_manifest, usable_pairs
from coral_mfg.config import OPTIONS, check_value, layered, read_config
from coral_mfg.errors import UserError

log = logging.getLogger("coral_mfg")

KEYS_HELP = """\
window keys:
  q, Esc   quit            space  pause / resume
  f        fullscreen      h      show / hide the HUD
  s        save a PNG screenshot of the window
  e        edit keep-out zones: drag a vertex, click an edge to add one,
           right-click a vertex to delete it, n new zone, Tab next zone,
           Ctrl+S save to the zone file, Esc leave edit mode
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _flag(parser: argparse._ActionsContainer, name: str, **kwargs: Any) -> None:
    """Add ``--name`` with its dashed alias ``--na-me``."""
    names = [f"--{name}"]
    if "_" in name:
        names.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*names, dest=name, default=None, **kwargs)


def _typed(key: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type that applies the same check as the config file."""

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


def run_parser(prog: str = "coral-mfg") -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description="Dual-stream manufacturing inspection: worker keep-out zones and apple "
        "grading, on a Coral Edge TPU or the CPU.",
        epilog="sub-commands: run (default), fetch-assets, doctor, bench. "
        "'coral-mfg SUBCOMMAND --help' for each.\n\n" + KEYS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"coral-mfg {__version__}")
    g = p.add_argument_group("models")
    _flag(g, "detection_model", metavar="FILE", help="detector .tflite (default: first available)")
    _flag(g, "detection_labels", metavar="FILE", help="detector labels (default: COCO)")
    _flag(g, "classifier_model", metavar="FILE", help="classifier .tflite")
    _flag(g, "classifier_labels", metavar="FILE", help="classifier labels")
    _flag(g, "device", type=_typed("device", str), metavar="auto|edgetpu|cpu",
          help="where inference runs (default auto: Edge TPU if found, else CPU)")
    _flag(g, "edgetpu_device", type=_typed("edgetpu_device", str), metavar="DEV",
          help="which Edge TPU: usb, usb:N, pci, pci:N or :N (default: the first)")
    _flag(g, "cpu_threads", type=_typed("cpu_threads", int), metavar="N",
          help="threads per CPU interpreter (default: cores / 2, as two interpreter "
          "pairs run, one per stream)")
    g = p.add_argument_group("inputs")
    _flag(g, "worker_safety_input", metavar="SRC",
          help="video file, /dev/videoN or rtsp:// / http(s):// URL (default: sample video)")
    _flag(g, "visual_inspection_input", metavar="SRC",
          help="video file, /dev/videoN or URL (default: sample apple video)")
    _flag(g, "realtime", action=argparse.BooleanOptionalAction,
          help="pace files at their own fps (default); --no-realtime runs every frame, "
          "as fast as possible")
    _flag(g, "stall_seconds", type=_typed("stall_seconds", float), metavar="S",
          help="a source with no frame for S seconds is lost and reopened (default 10)")
    _flag(g, "loop", action=argparse.BooleanOptionalAction,
          help="loop files (default: loop in a window, stop at the end headless)")
    g = p.add_argument_group("checks")
    _flag(g, "worker_threshold", type=_typed("worker_threshold", float), metavar="S",
          help="min person score (default: the detector's, 0.3 for MobileDet)")
    _flag(g, "inspection_threshold", type=_typed("inspection_threshold", float), metavar="S",
          help="min apple score (default: the detector's, 0.7 for MobileDet)")
    _flag(g, "keepout_points_path", metavar="CSV",
          help="keep-out polygon, x,y in output pixels (default configs/keepout_points.csv)")
    _flag(g, "safety_check_whole_box", action="store_const", const=True,
          help="overhead camera: any part of the box in the zone counts (default: the feet)")
    g = p.add_argument_group("output")
    _flag(g, "width", type=_typed("width", int), metavar="W", help="output width (default 960)")
    _flag(g, "height", type=_typed("height", int), metavar="H", help="output height (default 540)")
    _flag(g, "anonymize", action="store_const", const=True, help="fill person boxes opaque")
    _flag(g, "headless", action="store_const", const=True, help="no window")
    _flag(g, "fullscreen", action="store_const", const=True, help="start full screen (f toggles)")
    _flag(g, "screenshot", metavar="FILE.png",
          help="save the final window contents before quitting")
    _flag(g, "output", metavar="FILE.mp4", help="record both annotated streams side by side")
    _flag(g, "events", metavar="FILE.jsonl", help="write the JSON Lines event log")
    _flag(g, "max_frames", type=_typed("max_frames", int), metavar="N",
          help="stop each stream after N processed frames (0: no limit)")
    g = p.add_argument_group("general")
    p.add_argument("--config", metavar="FILE.toml",
                   help="settings file (default configs/default.toml); flags override it")
    _flag(g, "log_level", type=_typed("log_level", str.lower), metavar="LEVEL",
          help="debug, info, warning or error")
    _flag(g, "log_file", metavar="FILE", help="also write the log to FILE")
    return p


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the config file, then the flags given on the command line."""
    config_path = Path(args.config) if args.config else app_home() / "configs" / "default.toml"
    from_file = read_config(config_path) if args.config or config_path.is_file() else {}
    from_cli = {k: v for k, v in vars(args).items() if k in OPTIONS}
    settings = layered(from_file, from_cli)
    settings["config"] = str(config_path) if from_file or args.config else None
    # Zones: the config's, unless it has none or the CSV flag was given explicitly.
    settings["zones"] = from_file.get("zones") or None
    explicit_csv = from_cli.get("keepout_points_path") is not None
    settings["zones_from"] = "config" if settings["zones"] and not explicit_csv else "csv"
    if not Path(settings["keepout_points_path"]).is_absolute() and not from_file.get(
        "keepout_points_path"
    ):
        settings["keepout_points_path"] = str(app_home() / settings["keepout_points_path"])
    manifest = load_manifest()
    for key, sample in (
        ("worker_safety_input", manifest.samples["worker_safety"]),
        ("visual_inspection_input", manifest.samples["visual_inspection"]),
    ):
        if settings[key] is None:
            settings[key] = str(manifest.path(sample))
    return settings


def cmd_run(argv: Sequence[str]) -> int:
    args = run_parser().parse_args(argv)
    settings = resolve_settings(args)
    _setup_logging(settings["log_level"], settings.get("log_file"))
    from coral_mfg.app import run

    return run(settings)


def cmd_fetch_assets(argv: Sequence[str]) -> int:
    p = _Parser(
        prog="coral-mfg fetch-assets",
        description="Fill models/, videos/ and images/ from a mirror (folder or URL) or the "
        "official sources, verifying size and digest of every file.",
    )
    p.add_argument("--from", dest="mirror", metavar="DIR_OR_URL",
                   help=f"mirror with models/ and videos/ (default: ${ENV_MIRROR})")
    p.add_argument("--offline", action="store_true",
                   help="use only the mirror, never the official URLs")
    p.add_argument("--only", nargs="+", metavar="NAME", help="fetch only these assets")
    args = p.parse_args(argv)
    mirror = args.mirror or os.environ.get(ENV_MIRROR) or None
    manifest = load_manifest()
    home = app_home()
    results = fetch_all(manifest, home, mirror, download=not args.offline, names=args.only)
    for r in results:
        where = f"{r.asset.subdir}/{r.asset.name}"
        if r.status == "present":
            print(f"ok       {where} (already present, verified)")
        elif r.status == "fetched":
            print(f"fetched  {where} from {r.source}")
        else:
            opt = " (optional)" if r.asset.optional else ""
            print(f"MISSING  {where}{opt}: {r.detail}")
    pairs = usable_pairs(manifest, home, edgetpu=True)
    cpu_pairs = usable_pairs(manifest, home)
    if not pairs:
        print("error: no usable detector + classifier pair; the app cannot run", file=sys.stderr)
        return 1
    best = (cpu_pairs or pairs)[0]
    print(f"ready: detector {best[0].name} ({best[1]}) + classifier {best[2]}")
    return 0


def cmd_bench(argv: Sequence[str]) -> int:
    from coral_mfg.bench import main as bench_main

    return bench_main(argv)


def cmd_doctor(argv: Sequence[str]) -> int:
    _Parser(
        prog="coral-mfg doctor", description="Check runtime, accelerators, assets and display."
    ).parse_args(argv)
    from coral_mfg.doctor import run_doctor

    return run_doctor()


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "run": cmd_run,
    "fetch-assets": cmd_fetch_assets,
    "doctor": cmd_doctor,
    "bench": cmd_bench,
}


def _setup_logging(level: str, log_file: str | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
        except OSError as exc:
            raise UserError(f"cannot write log file {log_file} ({exc.strerror}); "
                            "pass a writable path to --log_file") from None
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS["run"]
    if args and args[0] in COMMANDS:
        command = COMMANDS[args.pop(0)]
    try:
        return command(args)
    except UserError as exc:
        message = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        print(f"coral-mfg: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("coral-mfg: interrupted", file=sys.stderr)
        return 130
    except Exception:
        # A bug: keep the whole traceback, in the log file too when there is one.
        if not logging.getLogger().handlers:
            _setup_logging("error")
        log.exception("internal error; please report it with this log")
        return 1
