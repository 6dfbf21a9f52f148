"""Waiting longer after each failure, so a thing that stays broken is not hammered, and
starting over after a success, so one that comes back is used again at once."""

from __future__ import annotations

from dataclasses import dataclass, field

FIRST_S = 1.0
MAX_S = 30.0


@dataclass
class Backoff:
    """1, 2, 4 ... ``cap`` seconds."""

    first: float = FIRST_S
    cap: float = MAX_S
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def wait(self) -> float:
        """The wait to use now; the one after it doubles."""
        now, self._next = self._next, min(self._next * 2, self.cap)
        return now

    def reset(self) -> None:
        self._next = self.first
