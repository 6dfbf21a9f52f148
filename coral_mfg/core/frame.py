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

    @property
    def size(self) -> tuple[int, int]:
        return (self.image.shape[1], self.image.shape[0])
