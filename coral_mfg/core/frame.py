"""A decoded frame: what capture hands to inference and every later stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame at source resolution, with where and when it came from."""

    stream: str
    index: int  # 0-based index in the source (restarts when a file loops)
    pts: float  # seconds in the source
    captured: float  # time.monotonic() when decoded
    image: npt.NDArray[np.uint8]
    decode_ms: float
    wall: float = field(default_factory=time.time)  # wall-clock time, for people and plants
    scene: float | None = None  # see clock

    @property
    def clock(self) -> float:
        """When the frame happened on the scene's own clock (monotonic seconds): a live
        source's capture time; a file's media time, anchored where it started.

        Debounces, dwell times, presence and the detection caps run on it, so a
        ``--no-realtime`` run of a file means the same seconds as the video shows,
        whatever the machine's speed.
        """
        return self.captured if self.scene is None else self.scene

    @property
    def size(self) -> tuple[int, int]:
        return (self.image.shape[1], self.image.shape[0])
