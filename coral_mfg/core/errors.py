"""Error types that separate a user's mistake from a bug.

A :class:`UserError` is printed as one line and exits with status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

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
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} not found: {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} cannot be read ({exc}); pass a UTF-8 text file") from None
