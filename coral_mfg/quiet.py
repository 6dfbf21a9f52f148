"""Keeping native libraries' chatter out of the terminal unless asked for.

OpenCV and FFmpeg write to the process's stderr from C++, past Python's
logging: a bad input would otherwise bury its one-line error under their
warnings. (LiteRT runs in the worker processes, whose output goes to the
debug log: see :mod:`coral_mfg.inference.client`.)
"""

from __future__ import annotations

import logging
import os

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
