"""Keeping native libraries' chatter out of the terminal unless asked for.

OpenCV and FFmpeg write to the process's stderr from C++, past Python's
logging: a bad input would otherwise bury its one-line error under their
warnings. TensorFlow and its converter, while training, write notes straight
to file descriptors 1 and 2: :func:`captured_output` keeps them off the
terminal. (LiteRT runs in the inference processes, whose output goes to the
debug log: see :mod:`coral_mfg.inference.client`.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

log = logging.getLogger("coral_mfg.native")

#: FFmpeg's quiet level (AV_LOG_QUIET) and OpenCV's: errors only.
_QUIET_ENV = {"OPENCV_FFMPEG_LOGLEVEL": "-8", "OPENCV_LOG_LEVEL": "ERROR"}


def quiet_libraries(debug: bool) -> None:
    """Silence OpenCV and FFmpeg unless debugging; before they open anything."""
    if debug:
        return
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # PyOpenGL notes at INFO that its optional C accelerator is not installed
    logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@dataclass
class _Capture:
    terminal: TextIO  # the real standard output, for the progress bar
    keep: bool = False


@contextlib.contextmanager
def captured_output() -> Iterator[_Capture]:
    """Output of the block kept off the terminal, at the file-descriptor level where
    native code writes; shown (its end) only when the block sets ``keep``, to explain a
    failure. ``terminal`` is the real standard output, for a progress bar."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink, os.fdopen(os.dup(saved[0]), "w") as terminal:
        capture = _Capture(terminal)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield capture
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if capture.keep:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace")[-4000:])
