"""The demo shows its point: the shipped config's walkway zone is entered by the sample
worker, so a plain run produces an entry, its snapshot and its event, and the
recording shows the alarm on the panel under the picture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from coral_mfg.outputs.panel import ALARM_RED, STRIP_HEIGHT
from tests.conftest import ROOT


def _is_red(pixels: np.ndarray) -> np.ndarray:
    r, g, b = ALARM_RED
    bgr = pixels.astype(np.int32)
    return (np.abs(bgr[..., 2] - r) < 40) & (bgr[..., 1] < g + 50) & (bgr[..., 0] < b + 50)


def test_the_shipped_config_shows_an_entry_its_snapshot_and_the_red_panel(
        tmp_path: Path) -> None:
    events, output, snaps = tmp_path / "events.jsonl", tmp_path / "demo.mp4", tmp_path / "s"
    result = subprocess.run(
        [sys.executable, "-m", "coral_mfg", "--headless", "--no-realtime", "--device", "cpu",
         "--events", str(events), "--output", str(output), "--snapshot_dir", str(snaps),
         "--no-history"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    log = [json.loads(x) for x in events.read_text().splitlines()]
    entries = [e for e in log if e["type"] == "keepout_enter"]
    assert [e["zone"] for e in entries] == ["walkway"]
    snapshot = cv2.imread(str(snaps / Path(entries[0]["snapshot"]).name))
    assert snapshot is not None and snapshot.shape == (540 + STRIP_HEIGHT, 960, 3)
    assert _is_red(snapshot[-STRIP_HEIGHT:]).mean() > 0.5  # the strip is red
    assert _is_red(snapshot[:, :4]).mean() > 0.9  # and so is the border
    # the recording: every frame carries the panel; the entry's frame is red on the left
    entry_frame = next(e["frame"] for e in log if e["type"] == "frame"
                       and e["stream"] == "worker_safety"
                       and any(o["zones"] for o in e["objects"]))
    cap = cv2.VideoCapture(str(output))
    index, red_at, calm_at = 0, list[int](), list[int]()
    while True:
        ok, image = cap.read()
        if not ok:
            break
        strip = image[-STRIP_HEIGHT:, :960]
        assert strip.std() > 10  # words on the strip, on every frame
        (red_at if _is_red(strip).mean() > 0.5 else calm_at).append(index)
        index += 1
    assert calm_at and calm_at[0] == 0  # before the entry: no alarm
    assert red_at and entry_frame <= red_at[0] <= entry_frame + 5
