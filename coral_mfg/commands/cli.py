"""Command line: the original demo's flags, plus sub-commands.

``coral-mfg [run] [flags]`` runs the inspection; ``fetch-assets``, ``doctor``,
``bench``, ``train-classifier``, ``train-anomaly``, ``eval-anomaly``, ``report``,
``plc-map`` and ``plc-poll`` are the other sub-commands. User errors end in one line and
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from coral_mfg.config.assets import (
    ENV_MIRROR,
    app_home,
    fetch_all,
    load_manifest,
    not_installed,
    usable_pairs,
)
from coral_mfg.config.flags import SUB_COMMANDS, Parser, resolve_settings, run_parser
from coral_mfg.core.errors import AssetError, UserError
from coral_mfg.core.quiet import quiet_libraries

log = logging.getLogger("coral_mfg")

def cmd_run(argv: Sequence[str]) -> int:
    args = run_parser().parse_args(argv)
    settings = resolve_settings(args)
    _setup_logging(settings.log.log_level, settings.log.log_file)
    from coral_mfg.commands.run import run

    return run(settings)


def cmd_fetch_assets(argv: Sequence[str]) -> int:
    p = Parser(
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
    unknown = sorted(set(args.only or ()) - {a.name for a in manifest.assets})
    if unknown:
        raise AssetError(f"unknown asset '{unknown[0]}'; known: "
                         + ", ".join(a.name for a in manifest.assets))
    results = fetch_all(manifest, home, mirror, download=not args.offline, names=args.only)
    pairs = usable_pairs(manifest, home, edgetpu=True)
    cpu_pairs = usable_pairs(manifest, home)
    best = (cpu_pairs or pairs)[0] if pairs else None
    # Optional detectors that are not there are one line, not a line per file.
    skipped = ({f for d in manifest.detectors[:manifest.detectors.index(best[0])]
                for f in (d.cpu, d.edgetpu) if f} if best else set())
    for r in results:
        if r.status == "missing" and r.asset.name in skipped:
            continue
        where = f"{r.asset.subdir}/{r.asset.name}"
        if r.status == "present":
            continue
        if r.status == "fetched":
            print(f"fetched  {where} from {r.source}")
        else:
            opt = " (optional)" if r.asset.optional else ""
            print(f"MISSING  {where}{opt}: {r.detail}")
    present = [r for r in results if r.status == "present"]
    if present:
        print(f"ok       {len(present)} file(s) already present, verified")
    if best is None:
        print("error: no usable detector + classifier pair; the app cannot run", file=sys.stderr)
        return 1
    fallback = not_installed(manifest, best[0])
    if fallback:
        print(f"note     {fallback} (optional: fetch-assets gets it once its source can be "
              "reached)")
    print(f"ready: detector {best[0].name} ({best[1]}) + classifier {best[2]}")
    return 0


def cmd_bench(argv: Sequence[str]) -> int:
    from coral_mfg.commands.bench import main as bench_main

    return bench_main(argv)


def cmd_train_classifier(argv: Sequence[str]) -> int:
    _setup_logging("info")
    from coral_mfg.training.command import main as train_main

    return train_main(argv)


def cmd_train_anomaly(argv: Sequence[str]) -> int:
    _setup_logging("info")
    from coral_mfg.training.anomaly import train_main

    return train_main(argv)


def cmd_eval_anomaly(argv: Sequence[str]) -> int:
    _setup_logging("info")
    from coral_mfg.training.anomaly import eval_main

    return eval_main(argv)


def cmd_report(argv: Sequence[str]) -> int:
    from coral_mfg.commands.report import main as report_main

    return report_main(argv)


def cmd_doctor(argv: Sequence[str]) -> int:
    parser = run_parser("coral-mfg doctor")
    parser.description = ("Check the runtime, accelerators, assets and display, and the run "
                          "these flags (and config file) describe: inputs and output folders.")
    args = parser.parse_args(argv)
    # its probes open inputs as a run does: FFmpeg's and OpenCV's chatter stays off screen
    quiet_libraries(debug=getattr(args, "log_level", None) == "debug")
    from coral_mfg.commands.doctor import run_doctor

    return run_doctor(args)


def cmd_plc_map(argv: Sequence[str]) -> int:
    from coral_mfg.commands.plc import plc_map_main

    return plc_map_main(argv)


def cmd_plc_poll(argv: Sequence[str]) -> int:
    from coral_mfg.commands.plc import plc_poll_main

    return plc_poll_main(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "run": cmd_run,
    "fetch-assets": cmd_fetch_assets,
    "doctor": cmd_doctor,
    "bench": cmd_bench,
    "train-classifier": cmd_train_classifier,
    "train-anomaly": cmd_train_anomaly,
    "eval-anomaly": cmd_eval_anomaly,
    "report": cmd_report,
    "plc-map": cmd_plc_map,
    "plc-poll": cmd_plc_poll,
}
assert tuple(COMMANDS) == SUB_COMMANDS, "the run's --help names every sub-command"


def _setup_logging(level: str, log_file: Path | None = None) -> None:
    quiet_libraries(debug=level == "debug")
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


def _command(args: list[str]) -> Callable[[Sequence[str]], int]:
    """The sub-command the first word names (taken off ``args``), else the run; a word that
    names none is refused with the closest one suggested."""
    if not args or args[0].startswith("-"):
        return COMMANDS["run"]
    word = args.pop(0)
    if word in COMMANDS:
        return COMMANDS[word]
    close = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"unknown sub-command '{word}' ({hint}sub-commands: {', '.join(COMMANDS)}; "
                    "flags start with --)")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _command(args)(args)
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
