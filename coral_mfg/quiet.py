"""Keeping native libraries' chatter out of the terminal unless asked for.

OpenCV, FFmpeg and LiteRT write to the process's stderr from C++, past
Python's logging: a bad input would otherwise bury its one-line error under
their warnings. Their messages go to the log at debug level instead.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("coral_mfg.native")

#: FFmpeg's quiet level (AV_LOG_QUIET) and OpenCV's: errors only.
_QUIET_ENV = {"OPENCV_FFMPEG_LOGLEVEL": "-8", "OPENCV_LOG_LEVEL": "ERROR"}


def quiet_libraries(debug: bool) -> None:
    """Silence OpenCV and FFmpeg unless debugging; before they open anything."""
    if debug:
        return
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@contextmanager
def native_stderr_to_log(level: int = logging.DEBUG) -> Iterator[None]:
    """Send what native code writes to stderr during the block to the log.

    Used around interpreter creation, where LiteRT announces its delegates;
    only the main thread runs then, so nothing else is caught.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.log(level, "%s", line.strip())
