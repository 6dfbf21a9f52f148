"""The run command: build the pipeline, run it until done or told to stop, close it.

Ctrl-C, SIGTERM and SIGHUP (a closed terminal) stop the run cleanly (the event
log gets its summary, the recording is finalized); a second Ctrl-C exits at
once, and the recording up to then stays playable (fragmented MP4).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from coral_mfg import __version__
from coral_mfg.pipeline import build_pipeline, summary_line
from coral_mfg.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.2


def _install_signals(stop: threading.Event) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            os._exit(130)
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, handle)


def run(settings: Settings) -> int:
    log.info("coral-mfg %s", __version__)
    stop = threading.Event()
    if settings.window.headless:
        pipeline = build_pipeline(settings)
        _install_signals(stop)
        pipeline.start()
        try:
            while not stop.is_set() and not pipeline.poll(POLL_S):
                pass
        finally:
            summary = pipeline.close()
    else:
        summary = _run_window(settings, stop)
    log.info("summary: %s", summary_line(summary))
    return 0


def _run_window(settings: Settings, stop: threading.Event) -> dict[str, Any]:
    """GL and glfw stay on this (main) thread; capture and inference run on others."""
    from coral_mfg.render.loop import WindowApp
    from coral_mfg.render.window import DisplaySink

    display = DisplaySink()
    pipeline = build_pipeline(settings, extra_sinks=[display])
    try:
        app = WindowApp(settings, pipeline, display)
    except BaseException:
        pipeline.close()
        raise
    _install_signals(stop)
    pipeline.start()
    try:
        app.run(stop)
    finally:
        summary = pipeline.close()
        app.finish()
    return summary
