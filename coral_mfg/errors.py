"""Error types that separate a user's mistake from a bug.

A :class:`UserError` is printed as one line and exits with status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


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
