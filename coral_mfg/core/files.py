"""Files and folders the application writes: atomic replacement, folders checked up front."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coral_mfg.core.errors import UserError


@contextmanager
def replacing(target: Path, mode: int = 0o644) -> Iterator[Path]:
    """A temporary file beside ``target``; it replaces ``target`` (with permissions
    ``mode``) if the block succeeds.

    Raise inside the block to abandon it: the temporary file is always removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.chmod(mode)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def writable_folder(path: Path) -> str | None:
    """Why the folder of ``path`` cannot take new files, or None when it can.

    Tried for real, making the folder if needed: permission bits say nothing for root.
    """
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"{folder} cannot be written ({exc.strerror})"
    return None


def make_folder(folder: Path, what: str, flag: str, takes: str = "folder") -> None:
    """Make ``folder`` (and its parents) or stop with one line naming it and the flag
    (which ``takes`` a folder, or a path inside one)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot make the {what} {folder} ({exc.strerror}); pass a writable "
                        f"{takes} to {flag}") from None
