"""Error types that separate a user's mistake from a bug.

A :class:`UserError` is printed as one line and exits with status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import stat
from pathlib import Path


class UserError(Exception):
    """Bad input the user can fix: the message names the thing and the fix."""

    exit_code = 2


class ConfigError(UserError):
    """A config, zone or CSV file that cannot be used as written."""


class ModelError(UserError):
    """A model file that is missing, corrupt or not what its role needs."""


class DeviceError(UserError):
    """An accelerator that was asked for but cannot be used."""


class AssetError(UserError):
    """An asset that could not be fetched or verified."""


def read_user_text(path: Path, what: str, fix: str, error: type[UserError]) -> str:
    """A user-supplied text file, or ``error`` naming it (``fix`` says what to do if absent)."""
    problem = not_a_file(path, what, "pass a text file")
    if problem:
        raise error(problem)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} not found: {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} cannot be read ({exc}); pass a UTF-8 text file") from None


def kind_of(path: Path) -> str | None:
    """``folder``, ``named pipe (FIFO)`` or ``special file`` when ``path`` exists and is not
    a regular file; None for a regular file or nothing there."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    return "special file"


def not_a_file(path: Path, what: str, fix: str) -> str | None:
    """Why ``path``, an existing thing that should be a regular file, is not one; None when
    it is one or does not exist (that is told by whoever opens it). A FIFO is refused: these
    files are read more than once (checked, then loaded; reloaded on change), and a FIFO
    gives its data once, or blocks until something writes to it."""
    kind = kind_of(path)
    if kind is None:
        return None
    if kind.startswith("named pipe"):
        return (f"{what} {path} is a named pipe (FIFO), which gives its data only once: "
                f"{fix}")
    return f"{what} {path} is a {kind}, not a file: {fix}"
