"""Which recordings to delete: the oldest first, never the one being written.

A folder of segments is held under a total size and a maximum age, and the
disk under it is kept above a free-space floor, so a recorder left running for
weeks neither fills the disk nor needs a person to clean it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

GB = 1024**3


@dataclass(frozen=True)
class Retention:
    """Limits on a folder of recordings; ``pattern`` names the files they cover."""

    max_bytes: int
    max_age_s: float
    min_free_bytes: int
    pattern: str = "*.mp4"

    def shared(self, ways: int) -> Retention:
        """An equal share of the space, for one of ``ways`` folders kept side by side (the
        age and the free-space floor stay: they hold for each)."""
        return replace(self, max_bytes=self.max_bytes // max(1, ways))


@dataclass(frozen=True)
class Pruned:
    """What one pass deleted, and the free space it left."""

    deleted: tuple[Path, ...]
    free_bytes: int
    low: bool  # still under the free-space floor: nothing older is left to delete


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def prune(folder: Path, policy: Retention, current: Path | None) -> Pruned:
    """Delete the oldest files until every limit holds; ``current`` is never deleted."""
    files = oldest_first(p for p in folder.glob(policy.pattern) if p != current and p.is_file())
    sizes = {p: file_size(p) for p in files}
    total = sum(sizes.values()) + (file_size(current) if current is not None else 0)
    free = free_bytes(folder)
    now = time.time()
    deleted: list[Path] = []
    for path in files:
        too_old = now - _mtime(path) > policy.max_age_s
        if not (too_old or total > policy.max_bytes or free < policy.min_free_bytes):
            break
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete old recording %s: %s", path, exc.strerror)
            continue
        deleted.append(path)
        total -= sizes[path]
        free += sizes[path]
    for path in deleted:
        log.info("recording %s deleted (retention)", path)
    return Pruned(tuple(deleted), free, free < policy.min_free_bytes)


def oldest_first(paths: Iterable[Path]) -> list[Path]:
    """By last write (to the nanosecond: several files may end within a second), then name."""
    def age(path: Path) -> tuple[int, str]:
        try:
            return (os.stat(path).st_mtime_ns, path.name)
        except OSError:
            return (0, path.name)

    return sorted(paths, key=age)


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def file_size(path: Path) -> int:
    """A file's size; 0 when it is gone (deleted meanwhile by a person or retention)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
