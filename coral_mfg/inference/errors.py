"""How an inference process fails, as the application tells the cases apart."""

from __future__ import annotations

import signal

from coral_mfg.core.errors import UserError
from coral_mfg.inference.protocol import Step


class ProcessDownError(Exception):
    """The process died, hung or broke: it must be restarted; the request in flight is lost."""


class RequestError(Exception):
    """The process answered with an error (it is still alive): this request failed."""


class ProcessStartError(UserError):
    """A process could not open its models.

    ``kind`` is the process's own (see :class:`Failed`), ``crash`` when native
    code killed it, or ``hang`` when it missed a step's deadline; ``stage`` is
    what it was doing then, in words, and ``step`` which step that was
    (:class:`~coral_mfg.inference.protocol.Step`); ``runtime`` names the
    libedgetpu it loaded and the version that library reports, once it has.
    """

    def __init__(self, message: str, *, kind: str, stage: str, step: str = Step.BUILD,
                 runtime: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.stage = stage
        self.step = step
        self.runtime = runtime


def describe_exit(code: int | None) -> str:
    """How a process ended, in words: 'killed by SIGSEGV', 'exit status 3'."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
