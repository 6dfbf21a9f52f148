"""A stream's view of one inference process: detect a frame, grade crops of it.

Resizing into shared memory happens on the calling thread, so the process only
runs the models. Each process has :data:`~coral_mfg.inference.protocol.LANES`
lanes, input slots of its own, so the next request is written while one runs.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from coral_mfg.core.detections import Detections
from coral_mfg.core.results import StageTimes
from coral_mfg.inference import adapters
from coral_mfg.inference.client import ProcessClient
from coral_mfg.inference.plan import Labels
from coral_mfg.inference.protocol import CROP_SLOTS, InputArena
from coral_mfg.inference.runtime import Device


class InferenceLane:
    """A stream's calls into one inference process: detect a frame, grade crops of it.

    Calls raise :class:`~coral_mfg.inference.client.ProcessDownError` when the process
    dies or hangs, and :class:`~coral_mfg.inference.client.RequestError` when
    it reports an error; the scheduler counts the frame as failed.
    """

    def __init__(self, client: ProcessClient, arena: InputArena, lane: int, device: Device,
                 labels: Labels) -> None:
        self.client = client
        self.arena = arena
        self.lane = lane
        self.device = device
        self.labels = labels

    def detect(self, frame: npt.NDArray[np.uint8], times: StageTimes | None = None) -> Detections:
        """Detections on a BGR frame, in its own pixels."""
        t0 = time.perf_counter()
        adapters.resize_rgb(frame, self.arena.detector[self.lane])
        t1 = time.perf_counter()
        out = self.client.detect(self.lane)
        if times is not None:
            times.preprocess += (t1 - t0) * 1000.0
            times.detect += (time.perf_counter() - t1) * 1000.0
        return out.raw.in_pixels((frame.shape[1], frame.shape[0]))

    def class_scores(
        self, frame: npt.NDArray[np.uint8], rois: list[tuple[int, int, int, int]],
        times: StageTimes | None = None, classifier: int = 0,
    ) -> npt.NDArray[np.float32]:
        """Scores of every grade for each ``x1, y1, x2, y2`` crop (frame pixels), one row
        each, from a classifier: 0 the co-compiled one, 1, 2 ... the cameras' own."""
        return self.crop_outputs(frame, rois, (classifier,), times)[0]

    def crop_outputs(
        self, frame: npt.NDArray[np.uint8], rois: list[tuple[int, int, int, int]],
        models: tuple[int, ...], times: StageTimes | None = None,
    ) -> tuple[npt.NDArray[np.float32], ...]:
        """Each crop model's outputs (see ``ProcessConfig.crop_models``) for each crop, one
        row per crop, in the order of ``models``.

        Models of one input size take the same crops in one request: a classifier
        and the extractor at 224x224 cost one resize and one round trip per crop batch.
        """
        t0 = time.perf_counter()
        specs = self.client.config.crop_models
        by_size: dict[tuple[int, int], list[int]] = {}
        for m in models:
            by_size.setdefault(specs[m].input_size, []).append(m)
        rows: dict[int, list[npt.NDArray[np.float32]]] = {m: [] for m in models}
        for size, group in by_size.items():
            crops = self.arena.crops_at(size)
            for start in range(0, len(rois), CROP_SLOTS):
                batch = rois[start:start + CROP_SLOTS]
                for slot, (x1, y1, x2, y2) in enumerate(batch):
                    adapters.resize_rgb(frame[y1:y2, x1:x2], crops[self.lane, slot])
                reply = self.client.classify(self.lane, len(batch), tuple(group))
                for m, out in zip(group, reply.outputs, strict=True):
                    rows[m].append(out)
        if times is not None:
            times.classify += (time.perf_counter() - t0) * 1000.0
        classes = len(self.labels.classifier)
        return tuple(np.vstack(rows[m]) if rows[m] else
                     np.zeros((0, classes if m == 0 else 0), np.float32) for m in models)
