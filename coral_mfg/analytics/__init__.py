"""What the detections mean: tracks, keep-out zones, worker safety and visual inspection.
Imports ``core``, ``config``, ``capture`` and ``inference``."""
