"""Files and folders the application writes: atomic replacement, folders checked up front."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from coral_mfg.core.errors import UserError, kind_of


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


def recording_name(now: float | None = None) -> str:
    """The file a recording takes in a folder given as its output: one per run, by the
    local time it started."""
    return time.strftime("coral-mfg-%Y%m%d-%H%M%S.mp4", time.localtime(now))


def into_folder(path: Path, said_folder: bool = False) -> Path:
    """A recording's file: ``path`` itself, or a new file in it when it is a folder (or was
    written as one, with a trailing slash)."""
    if said_folder or path.is_dir():
        return path / recording_name()
    return path


_EXAMPLE_NAMES = {"events": "events.jsonl", "history": "history.sqlite",
                  "log_file": "coral-mfg.log", "output": "recording.mp4"}


def written_problem(flag: str, path: Path, probe: Path, folder: bool) -> str | None:
    """Why the run cannot write ``path`` (set by ``--flag``; ``probe`` is a file it would
    create, ``folder`` whether the setting names a folder), in one line with the fix; None
    when it can. The run and doctor both ask this, so they say the same."""
    kind = kind_of(path)
    if folder and kind is not None and kind != "folder":
        return f"--{flag} {path} is a {kind}, not a folder: pass a folder"
    if not folder and kind == "folder":
        example = path / _EXAMPLE_NAMES.get(flag, f"{flag}.out")
        return f"--{flag} {path} is a folder: pass a file in it, like {example}"
    if not folder and kind is not None and kind.startswith("named pipe"):
        return (f"--{flag} {path} is a named pipe (FIFO): the run would block while nothing "
                "reads it; pass a regular file")
    problem = writable_folder(probe)
    if problem:
        return f"--{flag} {path}: {problem}; pass a writable path"
    return None


def make_folder(folder: Path, what: str, flag: str, takes: str = "folder") -> None:
    """Make ``folder`` (and its parents) or stop with one line naming it and the flag
    (which ``takes`` a folder, or a path inside one)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot make the {what} {folder} ({exc.strerror}); pass a writable "
                        f"{takes} to {flag}") from None


@contextmanager
def output_folder(folder: Path, what: str, flag: str) -> Iterator[None]:
    """:func:`make_folder` for a command's output: a folder it made is removed again when
    the command fails before writing anything into it (no empty folders left behind)."""
    made = not folder.exists()
    make_folder(folder, what, flag)
    try:
        yield
    except BaseException:
        if made:
            with suppress(OSError):
                folder.rmdir()  # only when empty
        raise
