"""Keeping TensorFlow's own printing off the terminal while training.

TensorFlow, its converter and LiteRT write notes from native code straight to
file descriptors 1 and 2, past Python's logging; the training's own progress
and results would drown in them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO


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
