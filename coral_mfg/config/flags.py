"""Command-line parsing shared by the run and the sub-commands.

Every flag that is also a setting is checked by the settings model itself, so
``--width 0`` and ``width = 0`` in the config file fail with the same words.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from coral_mfg import __version__
from coral_mfg.config.settings import (
    FLAG_HOME,
    Settings,
    check_value,
    default_of,
    load_settings,
)
from coral_mfg.core.errors import UserError


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def flag(parser: argparse._ActionsContainer, name: str, **kwargs: Any) -> None:
    """Add ``--name`` with its dashed alias ``--na-me``; unset flags stay None."""
    names = [f"--{name}"]
    if "_" in name:
        names.append(f"--{name.replace('_', '-')}")
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


def run_parser(prog: str = "coral-mfg") -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Dual-stream manufacturing inspection: worker keep-out zones and grading "
        "of detected objects (apples by default), on a Coral Edge TPU or the CPU.",
        epilog="sub-commands: run (default), fetch-assets, doctor, bench, train-classifier. "
        "'coral-mfg SUBCOMMAND --help' for each.\n\n" + KEYS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"coral-mfg {__version__}")
    g = p.add_argument_group("models")
    flag(g, "detection_model", metavar="FILE", help="detector .tflite (default: first available)")
    flag(g, "detection_labels", metavar="FILE", help="detector labels (default: COCO)")
    flag(g, "classifier_model", metavar="FILE", help="classifier .tflite")
    flag(g, "classifier_labels", metavar="FILE", help="classifier labels")
    flag(g, "device", type=typed("device", str), metavar="auto|edgetpu|cpu",
          help="where inference runs (default auto: Edge TPU if found, else CPU)")
    flag(g, "edgetpu_device", type=typed("edgetpu_device", str), metavar="DEV",
          help="which Edge TPU: usb, usb:N, pci, pci:N or :N (default: the first)")
    flag(g, "cpu_threads", type=typed("cpu_threads", int), metavar="N",
          help="threads per CPU interpreter (default: cores / cpu_workers)")
    flag(g, "cpu_workers", type=typed("cpu_workers", int), metavar="N",
          help=f"interpreter pairs on the CPU (default {default_of('cpu_workers')})")
    flag(g, "inference_timeout", type=typed("inference_timeout", float), metavar="S",
          help="an inference taking longer than S seconds restarts its worker "
          f"(default {default_of('inference_timeout'):g})")
    flag(g, "edgetpu_retry_seconds", type=typed("edgetpu_retry_seconds", float), metavar="S",
         help="after falling back to the CPU, try the Edge TPU again every S seconds "
         f"(default {default_of('edgetpu_retry_seconds'):g})")
    g = p.add_argument_group("inputs")
    flag(g, "worker_safety_input", metavar="SRC",
          help="video file, /dev/videoN or rtsp:// / http(s):// URL (default: sample video)")
    flag(g, "visual_inspection_input", metavar="SRC",
          help="video file, /dev/videoN or URL (default: sample apple video)")
    flag(g, "realtime", action=argparse.BooleanOptionalAction,
          help="pace files at their own fps (default); --no-realtime runs every frame, "
          "as fast as possible")
    flag(g, "stall_seconds", type=typed("stall_seconds", float), metavar="S",
          help="a source with no frame for S seconds is lost and reopened "
          f"(default {default_of('stall_seconds'):g})")
    flag(g, "loop", action=argparse.BooleanOptionalAction,
          help="loop files (default: loop in a window, stop at the end headless)")
    g = p.add_argument_group("checks")
    flag(g, "worker_threshold", type=typed("worker_threshold", float), metavar="S",
          help="min person score (default: the detector's, 0.3 for MobileDet)")
    flag(g, "inspection_threshold", type=typed("inspection_threshold", float), metavar="S",
          help="min score of an inspected object (default: the detector's, 0.7 for MobileDet)")
    flag(g, "inspect_labels", type=typed("inspect_labels"), metavar="LABEL[,LABEL]",
          help="detector labels whose objects are graded (default "
          f"{','.join(default_of('inspect_labels'))})")
    flag(g, "pass_grades", type=typed("pass_grades"), metavar="GRADE[,GRADE]",
          help="classifier grades drawn green, the others red (default: its first grade)")
    flag(g, "keepout_points_path", metavar="CSV",
          help="keep-out polygon, x,y in pixels of a 960x540 frame (default "
          f"{default_of('keepout_points_path')}), when the config defines no zones")
    flag(g, "safety_check_whole_box", action="store_const", const=True,
          help="overhead camera: any part of the box in the zone counts (default: the feet)")
    g = p.add_argument_group("output")
    flag(g, "width", type=typed("width", int), metavar="W",
         help=f"output width (default {default_of('width')})")
    flag(g, "height", type=typed("height", int), metavar="H",
         help=f"output height (default {default_of('height')})")
    flag(g, "anonymize", action="store_const", const=True,
         help="hide people under opaque boxes (with a margin; also where a person was just "
         "seen but missed on this frame)")
    flag(g, "headless", action="store_const", const=True, help="no window")
    flag(g, "fullscreen", action="store_const", const=True, help="start full screen (f toggles)")
    flag(g, "screenshot", metavar="FILE.png",
          help="save the final window contents before quitting (window only)")
    flag(g, "output", metavar="FILE.mp4",
         help="record both annotated streams side by side (H.264; playable even if the run "
         "is killed)")
    flag(g, "events", metavar="FILE.jsonl", help="write the JSON Lines event log")
    flag(g, "events_rotate_mb", type=typed("events_rotate_mb", int), metavar="MB",
         help="start a new event log past MB megabytes (default: never)")
    flag(g, "events_rotate_daily", action="store_const", const=True,
         help="start a new event log every day")
    flag(g, "events_keep", type=typed("events_keep", int), metavar="N",
         help=f"rotated event logs kept (default {default_of('events_keep')})")
    flag(g, "station", metavar="NAME",
         help="this station's name in every event (default: the host name)")
    flag(g, "snapshot_dir", metavar="DIR",
         help="JPEG snapshots of events (default: snapshots/ beside the event log)")
    flag(g, "snapshot_keepout", action=argparse.BooleanOptionalAction,
         help="a snapshot at each keep-out entry (default on)")
    flag(g, "snapshot_graded", action=argparse.BooleanOptionalAction,
         help="a snapshot and the crop of each graded object (default off)")
    flag(g, "snapshot_keep", type=typed("snapshot_keep", int), metavar="N",
         help=f"snapshots kept, the oldest deleted (default {default_of('snapshot_keep')})")
    flag(g, "harvest_dir", metavar="DIR",
         help="save every graded crop as DIR/<grade>/*.jpg, to sort and train a classifier on")
    flag(g, "harvest_max_mb", type=typed("harvest_max_mb", float), metavar="MB",
         help=f"stop harvesting when DIR holds MB megabytes "
         f"(default {default_of('harvest_max_mb'):g})")
    g = p.add_argument_group("MQTT (also an [mqtt] table in the config)")
    flag(g, "mqtt", type=typed("mqtt"), metavar="URL",
         help="publish events and state to mqtt://host:port or mqtts://host:port")
    flag(g, "mqtt_prefix", metavar="PREFIX",
         help=f"topic prefix (default {default_of('mqtt_prefix')})")
    flag(g, "mqtt_client_id", metavar="ID", help="client id (default coral_mfg-STATION)")
    flag(g, "mqtt_username", metavar="USER", help="user (or $CORAL_MFG_MQTT_USERNAME); "
         "give the password in the config or $CORAL_MFG_MQTT_PASSWORD")
    flag(g, "mqtt_ca_file", metavar="PEM", help="mqtts: the CA to trust (default: the system's)")
    flag(g, "mqtt_cert_file", metavar="PEM", help="mqtts: a client certificate")
    flag(g, "mqtt_key_file", metavar="PEM", help="mqtts: the client certificate's key")
    g = p.add_argument_group("web view (also an [http] table in the config)")
    flag(g, "http", type=typed("http"), metavar="HOST:PORT",
         help="serve the live page, /metrics, /healthz and /api/* (127.0.0.1:8080 for this "
         "machine only; any other address needs a token)")
    flag(g, "http_token", metavar="TOKEN",
         help="the token viewers must give (better: $CORAL_MFG_HTTP_TOKEN or the config)")
    flag(g, "http_max_connections", type=typed("http_max_connections", int), metavar="N",
         help="connections at once; more get 503 "
         f"(default {default_of('http_max_connections')})")
    flag(g, "http_max_viewers", type=typed("http_max_viewers", int), metavar="N",
         help="live video and event streams at once "
         f"(default {default_of('http_max_viewers')})")
    g = p.add_argument_group("all-shift recording (also a [recording] table in the config)")
    flag(g, "record_dir", metavar="DIR",
         help="record in segment files in DIR, the oldest deleted by retention")
    flag(g, "segment_minutes", type=typed("segment_minutes", float), metavar="M",
         help=f"length of a segment (default {default_of('segment_minutes'):g})")
    flag(g, "keep_gb", type=typed("keep_gb", float), metavar="GB",
         help=f"total size of the segments kept (default {default_of('keep_gb'):g})")
    flag(g, "keep_days", type=typed("keep_days", float), metavar="D",
         help=f"age of the oldest segment kept (default {default_of('keep_days'):g})")
    flag(g, "min_free_gb", type=typed("min_free_gb", float), metavar="GB",
         help="below this free space, delete the oldest segments and warn "
         f"(default {default_of('min_free_gb'):g})")
    flag(g, "encoder_preset", type=typed("encoder_preset", str), metavar="PRESET",
         help=f"x264 preset, ultrafast to medium (default {default_of('encoder_preset')})")
    g = p.add_argument_group("run")
    flag(g, "max_frames", type=typed("max_frames", int), metavar="N",
          help="stop each stream after N processed frames (0: no limit)")
    g = p.add_argument_group("general")
    p.add_argument("--config", metavar="FILE.toml",
                   help="settings file (default configs/default.toml); flags override it")
    flag(g, "log_level", type=typed("log_level", str.lower), metavar="LEVEL",
          help="debug, info, warning or error")
    flag(g, "log_file", metavar="FILE", help="also write the log to FILE")
    return p


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Defaults, then the config file, then the flags given on the command line."""
    flags = {k: v for k, v in vars(args).items() if k in FLAG_HOME}
    return load_settings(flags, Path(args.config).expanduser() if args.config else None)
