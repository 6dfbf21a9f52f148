"""A progress bar for the long steps of training that Keras does not draw itself."""

from __future__ import annotations

from typing import TextIO

WIDTH = 30


class Progress:
    """``title [=======       ] 45/96`` redrawn in place on a terminal; on a pipe or a log,
    a line at each quarter, so a log stays short."""

    def __init__(self, total: int, title: str, stream: TextIO) -> None:
        self.total = max(total, 1)
        self.title = title
        self.stream = stream
        self.done = 0
        self._quarter = -1
        self._tty = stream.isatty()
        self._draw()

    def add(self, count: int = 1) -> None:
        self.done = min(self.done + count, self.total)
        self._draw()

    def _draw(self) -> None:
        if self._tty:
            filled = WIDTH * self.done // self.total
            end = "\n" if self.done == self.total else ""
            self.stream.write(f"\r{self.title} [{'=' * filled}{' ' * (WIDTH - filled)}] "
                              f"{self.done}/{self.total}{end}")
        else:
            quarter = 4 * self.done // self.total
            if quarter == self._quarter:
                return
            self._quarter = quarter
            self.stream.write(f"{self.title}: {self.done}/{self.total}\n")
        self.stream.flush()
