"""Many objects, inference processes killed under load, every view polled all the while:
the counts still equal the events, every event reaches the broker, nothing raises."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path

from tests.conftest import ROOT, free_port, jsonl, video, wait_for
from tests.test_accelerator import _processes
from tests.test_mqtt import Broker, Subscriber

#: The whole frame: everyone who walks in enters it.
ALL = "x,y\n0,0\n960,0\n960,540\n0,540\n"
KILLS = 3



def _poll(base: str, stop: threading.Event, seen: Counter[str]) -> None:
    """The views, as fast as they answer: status, health and metrics."""
    while not stop.is_set():
        for path in ("/api/status", "/healthz", "/metrics", "/api/events"):
            try:
                with urllib.request.urlopen(base + path, timeout=10) as r:
                    r.read()
                    seen[path] += 1
            except OSError:
                seen["failed"] += 1


def test_counts_equal_events_while_processes_die_and_views_poll(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start()
    subscriber = Subscriber(broker.port)
    wait_for(subscriber.client.is_connected, "the subscriber")
    zone = tmp_path / "zone.csv"
    zone.write_text(ALL)
    events, log = tmp_path / "events.jsonl", tmp_path / "run.log"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop",
         "--worker_safety_input", str(video("store-aisle-detection.mp4")),
         "--visual_inspection_input", str(video("one-by-one-person-detection.mp4")),
         "--inspect_labels", "person", "--worker_threshold", "0.2",
         "--inspection_threshold", "0.25", "--keepout_points_path", str(zone),
         "--events", str(events), "--log_file", str(log), "--snapshot_graded",
         "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--http", f"127.0.0.1:{port}",
         "--inference_timeout", "10"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    polled: Counter[str] = Counter()
    poller = threading.Thread(target=_poll, args=(f"http://127.0.0.1:{port}", stop, polled))
    try:
        wait_for(lambda: proc.poll() is not None or (
            len(_processes(proc.pid)) == 2
            and sum(e["type"] == "frame" for e in jsonl(events)) >= 20), "a running station")
        assert proc.poll() is None, proc.communicate()[1]
        poller.start()
        for kill in range(KILLS):
            victim = _processes(proc.pid)[kill % 2]
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda k=kill: sum(e["type"] == "accelerator_restored"  # type: ignore[misc]
                                        for e in jsonl(events)) > k,
                     "the process restored", timeout=180)
        wait_for(lambda: sum(e["type"] == "graded" for e in jsonl(events)) >= 3
                 and sum(e["type"] == "keepout_enter" for e in jsonl(events)) >= 3,
                 "objects graded and entries", timeout=300)
    finally:
        stop.set()
        if poller.ident is not None:
            poller.join(30)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    try:
        ids = {e["id"] for e in jsonl(events) if "id" in e}
        wait_for(lambda: ids <= {e["id"] for e in subscriber.events()},
                 "every logged event at the broker")
        published = [e["id"] for e in subscriber.events()]
    finally:
        subscriber.close()
        broker.stop()
    assert proc.returncode == 0, stderr
    text = log.read_text()
    assert "Traceback" not in stderr and "Traceback" not in text, text[-3000:]
    assert polled["/api/status"] > 5 and polled["/metrics"] > 5
    logged = jsonl(events)
    summary = logged[-1]
    assert summary["type"] == "summary"
    graded = Counter(e["grade"] for e in logged if e["type"] == "graded")
    assert graded == Counter({g: n for g, n in summary["inspected"].items() if n})
    entries = Counter(e["zone"] for e in logged if e["type"] == "keepout_enter")
    assert dict(entries) == summary["violations_by_zone"]
    assert sum(entries.values()) == summary["keepout_violations"]
    assert summary["accelerator"]["lost"] >= KILLS
    assert summary["accelerator"]["restored"] >= KILLS
    assert len(published) == len(set(published))  # each event published once
