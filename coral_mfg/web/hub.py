"""What the web view shows, gathered on the output thread at no cost until someone looks.

The hub keeps a reference to each stream's newest result and the recent
events. Pictures are drawn and JPEG-encoded only when a viewer asks, at most
once per frame whatever the number of viewers, on one encoding thread, so
watching never takes more than one core's share from inspection and not
watching costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2

from coral_mfg.core.events import Event, event_json
from coral_mfg.core.results import FrameResult
from coral_mfg.core.status import RunStatus
from coral_mfg.core.threads import yield_to_inspection
from coral_mfg.outputs.base import SinkBase
from coral_mfg.outputs.overlay import annotated_pane, unseen
from coral_mfg.outputs.panel import health_of
from coral_mfg.web.metrics import Metrics

RECENT_EVENTS = 200
JPEG_QUALITY = 75


@dataclass(frozen=True)
class Picture:
    """A stream's frame as JPEG, with the sequence number of the result it shows."""

    seq: int
    jpeg: bytes


class WebHub(SinkBase):
    """The web view's side of the outputs; read from the server's thread."""

    def __init__(self, mask: float | None,
                 metrics: Metrics) -> None:
        self.mask = mask
        self.metrics = metrics
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[int, FrameResult]] = {}
        self._pictures: dict[str, Picture] = {}
        self._resent: dict[str, float] = {}  # when a blind camera's picture was last renewed
        self.events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=RECENT_EVENTS)
        self._event_seq = 0
        self._seq = 0
        self.encoder = ThreadPoolExecutor(1, thread_name_prefix="web-jpeg",
                                          initializer=yield_to_inspection)
        self.encoded = 0
        self.latest: RunStatus | None = None

    # --- the output thread ---------------------------------------------------------------

    def write(self, result: FrameResult) -> None:
        now = time.monotonic()
        with self._lock:
            self._seq += 1
            self._latest[result.stream] = (self._seq, result)
        self.metrics.observe(result, now)
        for event in result.events:
            self.event(event)

    def status(self, status: RunStatus) -> None:
        self.latest = status  # the strips' counts; one reference, read whole
        # a camera that cannot see sends no frames: its last one, dimmed and saying why,
        # is sent again once a second (a browser shows a stream's picture only once a
        # second one comes), so a viewer who comes now sees it too
        now = time.monotonic()
        with self._lock:
            for s in status.streams:
                found = self._latest.get(s.name)
                if s.blind and found is not None and now - self._resent.get(s.name, 0.0) >= 1.0:
                    self._resent[s.name] = now
                    self._seq += 1
                    self._latest[s.name] = (self._seq, found[1])

    def event(self, event: Event) -> None:
        record = event_json(event)  # made once, here, for every viewer
        with self._lock:
            self._event_seq += 1
            self.events.append((self._event_seq, record))

    def close(self) -> None:
        self.encoder.shutdown(wait=False, cancel_futures=True)

    # --- the server's thread ---------------------------------------------------------------

    def latest_seq(self, stream: str) -> int:
        with self._lock:
            found = self._latest.get(stream)
        return found[0] if found else 0

    def picture(self, stream: str) -> Picture | None:
        """The newest frame as JPEG, encoded once per frame (call off the event loop)."""
        with self._lock:
            found = self._latest.get(stream)
            cached = self._pictures.get(stream)
        if found is None:
            return None
        seq, result = found
        if cached is not None and cached.seq == seq:
            return cached
        pane = annotated_pane(result, self.mask, self.latest)
        shown = self.latest
        now = next((s for s in shown.streams if s.name == stream), None) if shown else None
        if shown is not None and now is not None and now.blind:
            health, _, reason = health_of(shown, now)  # as the strip says it
            unseen(pane, result.out_size[1],
                   "CANNOT SEE" if health == "blind" else health.upper(), reason)
        ok, data = cv2.imencode(".jpg", pane, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return None
        picture = Picture(seq, data.tobytes())
        with self._lock:
            self._pictures[stream] = picture
            self.encoded += 1
        return picture

    def events_after(self, seq: int) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return [(n, e) for n, e in self.events if n > seq]
