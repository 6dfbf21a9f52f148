"""A JPEG for each keep-out entry (and, when asked, each graded object), named in its event.

The file name is chosen when the event is stamped, so the event log and the
MQTT message name the picture before it is written; the picture is drawn on
the output thread, as the recording is. The folder keeps the newest
``keep`` pictures.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any

import cv2

from coral_mfg.core.clock import file_utc
from coral_mfg.core.events import Stamp
from coral_mfg.core.files import make_folder
from coral_mfg.core.names import name_part
from coral_mfg.core.results import Box, FrameResult, SnapshotRequest
from coral_mfg.core.status import RunStatus
from coral_mfg.outputs.base import SinkBase
from coral_mfg.outputs.health import OutputHealth, os_reason
from coral_mfg.outputs.overlay import annotated_pane

log = logging.getLogger(__name__)

JPEG_QUALITY = 90


class Snapshots(SinkBase):
    """Writes the pictures that stamped events name; see the module's docstring."""

    def __init__(self, folder: Path, kinds: frozenset[str], keep: int,
                 mask: float | None) -> None:
        make_folder(folder, "snapshot folder", "--snapshot_dir")
        self.folder = folder
        self.kinds = kinds
        self.keep = keep
        self.mask = mask
        self.health = OutputHealth("snapshots")
        self.files: deque[Path] = deque(sorted(
            p for p in folder.glob("*.jpg") if not p.name.endswith("-crop.jpg")))
        self.deleted = 0
        self.latest: RunStatus | None = None  # the run's counts, for the strip

    def status(self, status: RunStatus) -> None:
        self.latest = status

    def name(self, kind: str, stamp: Stamp, camera: str) -> str | None:
        """The file for the picture of ``camera``'s event of ``kind`` (when, which camera,
        what, and the start of its id), or None when that kind is not pictured: the
        events' maker asks."""
        if kind not in self.kinds:
            return None
        return str(self.folder / f"{file_utc(stamp.wall)}-{name_part(camera)}-{kind}-"
                   f"{stamp.id[:8]}.jpg")

    def write(self, result: FrameResult) -> None:
        self._take(result.snapshots, result)

    def pictures(self, requests: tuple[SnapshotRequest, ...]) -> None:
        self._take(requests, None)

    def _take(self, requests: tuple[SnapshotRequest, ...], carrier: FrameResult | None) -> None:
        for request in requests:
            path = request.event.snapshot
            shown = request.result or carrier
            if path is not None and shown is not None and self.health.may_write(self.folder):
                self._save(Path(path), request, shown)

    def _save(self, path: Path, request: SnapshotRequest, shown: FrameResult) -> None:
        pane = annotated_pane(shown, self.mask, self.latest)
        try:
            self._jpeg(path, pane)
            if request.crop is not None:
                self._jpeg(path.with_name(path.stem + "-crop.jpg"), _crop(shown, request.crop))
        except OSError as exc:
            self.health.failed(os_reason(exc))
            return
        self.health.wrote()
        self.files.append(path)
        self._prune()

    def _jpeg(self, path: Path, image: Any) -> None:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"JPEG encoding failed for {path.name}")
        path.write_bytes(data.tobytes())

    def _prune(self) -> None:
        while len(self.files) > self.keep:
            old = self.files.popleft()
            for p in (old, old.with_name(old.stem + "-crop.jpg")):
                try:
                    p.unlink(missing_ok=True)
                except OSError as exc:
                    log.debug("cannot delete snapshot %s: %s", p, exc)
            self.deleted += 1

    def counts(self) -> dict[str, Any]:
        return {**self.health.counts(), "deleted": self.deleted}


def _crop(result: FrameResult, box: Box) -> Any:
    """The object at source resolution: its output-frame box mapped back to the frame."""
    x, y, pw, ph = result.picture
    fw, fh = result.frame.size
    sx, sy = fw / pw, fh / ph
    x1, y1, x2, y2 = box
    left, top = max(0, int((x1 - x) * sx)), max(0, int((y1 - y) * sy))
    right, bottom = min(fw, int((x2 - x) * sx) + 1), min(fh, int((y2 - y) * sy) + 1)
    return result.frame.image[top:bottom, left:right]
