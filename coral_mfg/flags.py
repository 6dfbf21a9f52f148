"""Command-line parsing shared by the run and the sub-commands.

Every flag that is also a setting is checked by the settings model itself, so
``--width 0`` and ``width = 0`` in the config file fail with the same words.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from coral_mfg.errors import UserError
from coral_mfg.settings import check_value


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def flag(parser: argparse._ActionsContainer, name: str, **kwargs: Any) -> None:
    """Add ``--name`` with its dashed alias ``--na-me``; unset flags stay None."""
    names = [f"--{name}"]
    if "_" in name:
        names.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*names, dest=name, default=None, **kwargs)


def typed(key: str, convert: Callable[[str], Any] = str) -> Callable[[str], Any]:
    """An argparse type that applies the settings model's check of ``key``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}") from None
        try:
            return check_value(key, value, f"--{key}")
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None

    return parse
