"""The run command: build the pipeline, run it until done or told to stop, close it.

Ctrl-C and SIGTERM stop the run cleanly (the event log gets its summary, the
recording is finalized); a second Ctrl-C exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from coral_mfg import __version__
from coral_mfg.errors import UserError
from coral_mfg.pipeline import build_pipeline

log = logging.getLogger(__name__)

POLL_S = 0.2


def _install_signals(stop: threading.Event) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            os._exit(130)
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)


def run(settings: dict[str, Any]) -> int:
    if not settings.get("headless"):
        raise UserError(
            "this version has no window yet; run with --headless "
            "(and --output FILE.mp4 to record)"
        )
    log.info("coral-mfg %s", __version__)
    pipeline = build_pipeline(settings)
    stop = threading.Event()
    _install_signals(stop)
    pipeline.start()
    try:
        while not stop.is_set() and not pipeline.poll(POLL_S):
            pass
    finally:
        summary = pipeline.close()
    log.info("summary: %s", summary)
    return 0
