"""Plant integration against a real broker: Debian's mosquitto on a free loopback port,
a real subscriber, the application as a real process on the sample videos."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from coral_mfg.outputs.panel import STRIP_HEIGHT
from tests.conftest import ROOT, free_port, jsonl, wait_for

APP = [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu"]
#: A zone on the floor that the sample's worker walks into once, then out of when the
#: video loops (pixels of a 960x540 frame).
ZONE_CSV = "x,y\n150,400\n400,400\n400,480\n150,480\n"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")




class Broker:
    """mosquitto on 127.0.0.1; stop and start it again on the same port."""

    def __init__(self, folder: Path) -> None:
        assert shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists(), (
            "Debian's mosquitto is needed (scripts/setup.sh --dev installs it)")
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             "persistence false\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@dataclass(frozen=True)
class Message:
    topic: str
    payload: str
    retain: bool


class Subscriber:
    """Everything under ``coral_mfg/#``, in arrival order; subscribes again on reconnect."""

    def __init__(self, port: int) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{port}")
        self.client.on_connect = lambda c, *_: c.subscribe("coral_mfg/#", qos=1)
        self.client.on_message = self._message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, msg.payload.decode(), bool(msg.retain)))

    def all(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.all() if m.topic == "coral_mfg/events"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    sub = Subscriber(broker.port)
    wait_for(sub.client.is_connected, "the subscriber")
    try:
        yield sub
    finally:
        sub.close()





def _app(tmp: Path, port: int, *extra: str, csv: bool = True
         ) -> tuple[subprocess.Popen[str], Path]:
    """The app on the samples; its zone the CSV one unless ``csv`` is False (the config's)."""
    zone = tmp / "zone.csv"
    zone.write_text(ZONE_CSV)
    events = tmp / "events.jsonl"
    zones = ["--keepout_points_path", str(zone)] if csv else []
    proc = subprocess.Popen(
        [*APP, "--loop", *zones, "--events", str(events),
         "--mqtt", f"mqtt://127.0.0.1:{port}", "--station", "line-7", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, events


def _finish(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    return stderr


def _kinds(sub: Subscriber) -> list[str]:
    return [e["type"] for e in sub.events()]


def _payloads(sub: Subscriber, topic: str) -> list[str]:
    return [m.payload for m in sub.all() if m.topic == topic]


def test_events_state_and_availability_reach_the_broker(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    proc, events = _app(tmp_path, broker.port, "--snapshot_graded")
    try:
        wait_for(lambda: "keepout_exit" in _kinds(subscriber)
              and _kinds(subscriber).count("graded") >= 2, "an entry, an exit, two grades")
        wait_for(lambda: len(_payloads(subscriber, "coral_mfg/worker_safety/state")) >= 2,
              "stream state")
    finally:
        stderr = _finish(proc)
    assert proc.returncode == 0, stderr
    assert _payloads(subscriber, "coral_mfg/available")[0] == "online"
    wait_for(lambda: _payloads(subscriber, "coral_mfg/available")[-1] == "offline", "offline")
    # the summary counts every message, the stopped states and the goodbye included
    counted = jsonl(events)[-1]["outputs"]["mqtt"]
    assert counted["lost"] == counted["dropped"] == 0
    wait_for(lambda: len(subscriber.all()) == counted["published"],
             f"{counted['published']} messages, as the summary says")

    published = subscriber.events()
    enter = next(e for e in published if e["type"] == "keepout_enter")
    leave = next(e for e in published if e["type"] == "keepout_exit")
    assert (enter["zone"], enter["stream"], enter["station"]) == ("zone", "worker_safety",
                                                                  "line-7")
    assert leave["track"] == enter["track"] and leave["seconds_in_zone"] > 0
    graded = [e for e in published if e["type"] == "graded"]
    assert [g["grade"] for g in graded[:2]] == ["fresh_apple", "rotten_apple"]
    assert all(g["frames"] >= 3 and 0 < g["grade_score"] <= 1 for g in graded)

    # the same events, with the same ids, in the event log
    logged = {e["id"]: e for e in jsonl(events) if "id" in e}
    for e in published:
        assert logged[e["id"]] == e
        assert ISO.match(e["timestamp"]) and e["station"] == "line-7"
    assert len({e["id"] for e in published}) == len(published)

    occupancy = _payloads(subscriber, "coral_mfg/worker_safety/zones/zone/occupancy")
    assert occupancy[:3] == ["0", "1", "0"]
    counts = json.loads(_payloads(subscriber, "coral_mfg/inspection/counts")[-1])
    assert counts["fresh_apple"] >= 1 and counts["rotten_apple"] >= 1
    # the station's counts are its one inspection camera's
    assert json.loads(_payloads(
        subscriber, "coral_mfg/visual_inspection/inspection/counts")[-1]) == counts
    state = json.loads(_payloads(subscriber, "coral_mfg/visual_inspection/state")[0])
    assert state["status"] == "live" and {"fps", "dropped", "errors"} <= set(state)
    assert json.loads(_payloads(subscriber, "coral_mfg/worker_safety/state")[-1])[
        "status"] == "stopped"

    # retained: a late subscriber is told the state at once
    late = Subscriber(broker.port)
    try:
        wait_for(lambda: {"coral_mfg/available", "coral_mfg/worker_safety/state",
                       "coral_mfg/worker_safety/zones/zone/occupancy",
                       "coral_mfg/inspection/counts"}
              <= {m.topic for m in late.all() if m.retain}, "retained topics")
    finally:
        late.close()

    _check_snapshots(enter, graded[0])


def _check_snapshots(enter: dict[str, Any], graded: dict[str, Any]) -> None:
    """The entry's picture shows the person's box in red; the grade's has its crop."""
    picture = cv2.imread(enter["snapshot"])
    assert picture is not None and picture.shape == (540 + STRIP_HEIGHT, 960, 3)
    strip = picture[540:]
    assert (strip[..., 2].astype(int) > 180).mean() > 0.5  # the alarm: a red strip
    inside = picture[10:530, 10:950]  # within the alarm border
    b, g, r = (inside[..., i].astype(int) for i in range(3))
    assert ((r > 180) & (g < 60) & (b < 60)).sum() > 500  # a red box was drawn
    assert cv2.imread(graded["snapshot"]) is not None
    crop = cv2.imread(graded["snapshot"].replace(".jpg", "-crop.jpg"))
    assert crop is not None and min(crop.shape[:2]) > 30
    assert np.mean(crop[..., 2]) > np.mean(crop[..., 0])  # an apple: more red than blue


def test_the_last_will_says_offline_when_the_app_is_killed(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    proc, _ = _app(tmp_path, broker.port)
    try:
        wait_for(lambda: "online" in _payloads(subscriber, "coral_mfg/available"), "online")
        proc.kill()  # no cleanup runs: only the broker can tell
        proc.wait(30)
        wait_for(lambda: _payloads(subscriber, "coral_mfg/available")[-1] == "offline",
              "the last will")
    finally:
        _finish(proc)


def test_a_broker_that_goes_away_and_comes_back(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    config = tmp_path / "site.toml"
    config.write_text("[mqtt]\nmqtt_queue = 3\nmqtt_state_seconds = 0.5\n")
    proc, events = _app(tmp_path, broker.port, "--config", str(config))
    try:
        wait_for(lambda: len(_payloads(subscriber, "coral_mfg/worker_safety/state")) >= 1,
              "state")
        broker.stop()
        frames = len(jsonl(events))
        wait_for(lambda: len(jsonl(events)) > frames + 100, "inspection going on without it")
        before = len(subscriber.all())
        broker.start()
        wait_for(lambda: any(m.topic == "coral_mfg/available" and m.payload == "online"
                          for m in subscriber.all()[before:]), "online again")
        wait_for(lambda: any(m.topic.endswith("/state") for m in subscriber.all()[before:]),
              "publishing again")
    finally:
        stderr = _finish(proc)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "mqtt: cannot write (lost the broker" in stderr
    counts = jsonl(events)[-1]["outputs"]["mqtt"]
    assert counts["connects"] >= 2 and counts["lost"] > 0  # state it could not send


def test_an_unreachable_broker_does_not_stop_the_run(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    proc = subprocess.run(
        [*APP, "--no-realtime", "--max_frames", "20", "--events", str(events),
         "--mqtt", f"mqtt://127.0.0.1:{free_port()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("mqtt: cannot write (broker 127.0.0.1") == 1, proc.stderr
    logged = jsonl(events)
    summary = logged[-1]
    assert summary["frames"] == {"worker_safety": 20, "visual_inspection": 20}
    mqtt = summary["outputs"]["mqtt"]
    assert mqtt["connected"] is False and mqtt["published"] == 0
    # every message held for the broker is counted lost at the end: the events and states
    held = [e for e in logged if e["type"] not in ("frame", "summary")]
    assert held and mqtt["lost"] >= len(held), (mqtt, len(held))
    assert "message(s) still queued for the broker 127.0.0.1" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mqtt", "amqp://host"], "scheme 'amqp' is not mqtt or mqtts"),
        (["--mqtt", "mqtt://host:port"], "the port is not a number"),
        (["--mqtt", "mqtt://"], "no host in it"),
        (["--mqtt", "mqtts://host", "--mqtt_ca_file", "/nonexistent/ca.pem"],
         "--mqtt_ca_file /nonexistent/ca.pem not found"),
        (["--mqtt", "ftp://me:hunter2@host"], "got 'ftp://me:***@host'"),
        (["--mqtt", "mqtt://me:hun/ter2@127.0.0.1:1883"], "got 'mqtt://me:***@127.0.0.1:1883'"),
        (["--mqtt", "mqtt://me:hunter2@host:port"], "got 'mqtt://me:***@host:port'"),
        (["--mqtt", "mqtt://host", "--mqtt_prefix", "plant/#"], "without the wildcards"),
        (["--mqtt", "mqtt://host", "--mqtt_prefix", "a+b"], "without the wildcards"),
        (["--mqtt", "mqtt://host", "--mqtt_prefix", "$SYS"], "does not start with $"),
    ],
    ids=["scheme", "port", "host", "tls-file", "password-hidden", "password-slash",
         "password-bad-port", "prefix-hash", "prefix-plus", "prefix-dollar"],
)
def test_bad_broker_settings_stop_the_start_in_one_line(args: list[str], message: str) -> None:
    proc = subprocess.run([*APP, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("coral-mfg: error:") and message in last, proc.stderr
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr


def test_every_event_in_the_log_is_stamped(tmp_path: Path) -> None:
    zone = tmp_path / "zone.csv"
    zone.write_text(ZONE_CSV)
    events = tmp_path / "events.jsonl"
    proc = subprocess.run(
        [*APP, "--no-realtime", "--keepout_points_path", str(zone), "--events", str(events),
         "--station", "press-2"], cwd=ROOT, capture_output=True, text=True, timeout=300,
        check=False)
    assert proc.returncode == 0, proc.stderr
    logged = jsonl(events)
    stamped = [e for e in logged if e["type"] not in ("frame", "summary")]
    assert {"keepout_enter", "graded"} <= {e["type"] for e in stamped}
    for e in stamped:
        assert ISO.match(e["timestamp"]) and e["station"] == "press-2" and e["stream"]
        assert len(e["id"]) == 32
    assert len({e["id"] for e in stamped}) == len(stamped)
    snapshot = next(e for e in stamped if e["type"] == "keepout_enter")["snapshot"]
    assert Path(snapshot).parent == tmp_path / "snapshots" and Path(snapshot).is_file()
    assert ISO.match(logged[-1]["timestamp"]) and logged[-1]["station"] == "press-2"


# --- names from the config in topics ----------------------------------------------------------

#: Zone names a person may well write, each with a character that means something in a topic.
ODD_NAMES = {"Press #2": "Press %232", "a/b": "a%2Fb", "x+y": "x%2By", "Presse ü": "Presse ü",
             "100%": "100%25"}


def _zones_config(tmp: Path, names: list[str]) -> Path:
    config = tmp / "site.toml"
    config.write_text("".join(
        f'[[safety.zones]]\nname = "{name}"\n'
        "points = [[150, 400], [400, 400], [400, 480], [150, 480]]\n" for name in names),
        encoding="utf-8")
    return config


def test_zone_names_become_one_topic_level_each(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    config = _zones_config(tmp_path, list(ODD_NAMES))
    proc, events = _app(tmp_path, broker.port, "--config", str(config), csv=False)
    topics = {f"coral_mfg/worker_safety/zones/{level}/occupancy"
              for level in ODD_NAMES.values()}
    try:
        wait_for(lambda: all("1" in _payloads(subscriber, t) for t in topics),
                 "every zone's occupancy, entered")
    finally:
        stderr = _finish(proc)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    wait_for(lambda: _payloads(subscriber, "coral_mfg/available")[-1] == "offline", "offline")
    assert {m.topic for m in subscriber.all() if "/zones/" in m.topic} == topics
    entered = {e["zone"] for e in subscriber.events() if e["type"] == "keepout_enter"}
    assert entered == set(ODD_NAMES)  # payloads carry the names as written
    logged = [e for e in jsonl(events) if "id" in e]
    assert {e["id"] for e in logged} <= {e["id"] for e in subscriber.events()}
    summary = jsonl(events)[-1]
    assert "sink_failures" not in summary["outputs"]
    mqtt_counts = summary["outputs"]["mqtt"]
    assert mqtt_counts["lost"] == mqtt_counts["dropped"] == 0
    assert mqtt_counts["published"] >= len(logged) + len(topics)


def test_a_name_with_a_control_character_is_refused_at_start(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[[safety.zones]]\nname = "press\\u0000two"\n'
                      "points = [[150, 400], [400, 400], [400, 480]]\n")
    proc = subprocess.run([*APP, "--config", str(config), "--mqtt", "mqtt://127.0.0.1:9"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "zone 1: needs a name without control characters (it holds U+0000)" in last
    assert "\x00" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("password", ["hu@nter2", "hu:nter2", "h@u:nter2@"])
def test_a_password_never_reaches_the_terminal_or_the_log(
    tmp_path: Path, broker: Broker, password: str
) -> None:
    log = tmp_path / "run.log"
    url = f"mqtt://user:{password}@127.0.0.1:{broker.port}"
    proc = subprocess.run(
        [*APP, "--no-realtime", "--max_frames", "10", "--mqtt", url, "--log_file", str(log),
         "--log_level", "debug"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    for text in (proc.stderr, log.read_text()):
        assert password not in text and "nter2" not in text
