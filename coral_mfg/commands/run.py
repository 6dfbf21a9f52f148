"""The run command: build the pipeline, run it until done or told to stop, close it.

Ctrl-C, SIGTERM and SIGHUP (a closed terminal) stop the run cleanly (the event
log gets its summary, the recording is finalized); a second Ctrl-C exits at
once, and the recording up to then stays playable (fragmented MP4).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from coral_mfg import __version__
from coral_mfg.commands.service import Watchdog, notify
from coral_mfg.config.settings import Settings
from coral_mfg.core.clock import POLL_S
from coral_mfg.core.status import summary_line
from coral_mfg.inference.protocol import remove_shared_memory
from coral_mfg.runtime.builder import build_pipeline
from coral_mfg.web.guard import raise_open_file_limit
from coral_mfg.web.view import WebView

log = logging.getLogger(__name__)



def _install_signals(stop: threading.Event) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            remove_shared_memory()
            os._exit(130)
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, handle)


def run(settings: Settings) -> int:
    stop = threading.Event()
    # First, so that no signal is lost while the run starts (a signal the shell had this
    # process ignore would be dropped, not queued): one during the start stops the run
    # as soon as it stands; a second Ctrl-C exits at once.
    _install_signals(stop)
    log.info("coral-mfg %s", __version__)
    raise_open_file_limit()
    if settings.window.headless:
        summary = _run_headless(settings, stop)
    else:
        summary = _run_window(settings, stop)
    log.info("summary: %s", summary_line(summary))
    for line in plain_summary(settings, summary):
        print(f"coral-mfg: {line}", file=sys.stderr)
    return 0


def plain_summary(settings: Settings, summary: dict[str, Any]) -> list[str]:
    """The end of a run in a few words: what it saw, and what it wrote where."""
    frames: dict[str, int] = summary.get("frames", {})
    lines = [f"processed {sum(frames.values())} frames ("
             + ", ".join(f"{name} {n}" for name, n in frames.items()) + ")"]
    counted = {g: n for g, n in summary.get("inspected", {}).items() if n}
    seen = [f"keep-out entries {summary.get('keepout_violations', 0)}"]
    if counted or any("inspection" in c.get("roles", ())
                      for c in summary.get("cameras", {}).values()):
        seen.append("inspected " + (", ".join(f"{n} {g}" for g, n in counted.items())
                                    or "nothing"))
    lines.append("; ".join(seen))
    outputs: dict[str, dict[str, Any]] = summary.get("outputs", {})
    wrote = []
    for path in outputs.get("recording", {}).get("recent", [])[-1:]:
        wrote.append(f"recording {path}")
    segments = sum(o.get("files", 0) for k, o in outputs.items() if k.startswith("segments"))
    if settings.recording.record_dir is not None:
        wrote.append(f"segments {settings.recording.record_dir} ({segments} files)")
    paths = {"events": settings.output.events, "history": settings.history_file,
             "snapshots": settings.snapshot_folder, "harvest": settings.output.harvest_dir}
    for key, path in paths.items():
        if key in outputs and path is not None:
            wrote.append(f"{key} {path} ({outputs[key].get('written', 0)} written)")
    shot = settings.window.screenshot
    if shot is not None and shot.is_file():  # saved by the window as it closed
        wrote.append(f"screenshot {shot}")
    lines.append("wrote " + ", ".join(wrote) if wrote else "wrote no files (--output, "
                 "--events or --record_dir keep what a run sees)")
    return lines


def _run_headless(settings: Settings, stop: threading.Event) -> dict[str, Any]:
    web = WebView(settings)
    with build_pipeline(settings, extra_sinks=web.sinks) as pipeline:
        with web.serving(pipeline.board, pipeline.shape_editor):
            pipeline.start()
            notify("READY=1")
            watchdog = Watchdog()
            try:
                while not stop.is_set() and not pipeline.poll(POLL_S):
                    watchdog.alive()
            finally:
                notify("STOPPING=1")
        return pipeline.close()


def _run_window(settings: Settings, stop: threading.Event) -> dict[str, Any]:
    """GL and glfw stay on this (main) thread; capture and inference run on others."""
    from coral_mfg.render.loop import WindowApp
    from coral_mfg.render.window import DisplaySink, check_display

    check_display()
    display = DisplaySink()
    web = WebView(settings)
    with build_pipeline(settings, extra_sinks=[display, *web.sinks]) as pipeline:
        app = WindowApp(settings, pipeline, display)
        try:
            with web.serving(pipeline.board, pipeline.shape_editor):
                pipeline.start()
                notify("READY=1")
                try:
                    app.run(stop)
                finally:
                    notify("STOPPING=1")
            summary = pipeline.close()
        finally:
            app.finish()  # the last results, drawn after the run drained
    return summary
