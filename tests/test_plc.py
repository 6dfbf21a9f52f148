"""The PLC servers against a real asyncua client and a real pymodbus client, the
application a real process on the sample videos (looping, so everything the tests wait
for comes round again: nothing depends on the machine's speed).

The addresses the tests read come from ``coral-mfg plc-map --format json`` for the same
config, never from the code: what a PLC programmer copies is what is tested.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from asyncua import ua
from asyncua.sync import Client
from pymodbus.client import ModbusTcpClient

from tests.conftest import ROOT, free_port, jsonl, video, wait_for
from tests.test_sources import _camera as _network_camera

APP = [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu"]
STATION = "line-7"
ADMIN, ADMIN_PASSWORD = "boss", "adm1n-pw"
#: A zone on the floor that the sample's worker walks into, then out of (pixels of a
#: 960x540 frame).
FLOOR = {"name": "floor", "points": [[150, 400], [400, 400], [400, 480], [150, 480]],
         "units": "pixels"}
ENTRY_KEYS = {"name", "type", "opcua", "modbus"}
MODBUS_KEYS = {"table", "address", "count"}


def _config(tmp: Path, *, worker_input: str | None = None, **opcua: Any) -> Path:
    cameras: dict[str, Any] = {
        "worker_safety": {"input": worker_input or str(video("worker-zone-detection.mp4")),
                          "roles": ["safety"], "zones": [FLOOR]},
        "visual_inspection": {"input": str(video("apple-conveyor.mp4")),
                              "roles": ["inspection"], "reject": True,
                              "reject_pulse_ms": 1000},
    }
    table: dict[str, Any] = {"cameras": cameras}
    if opcua:
        table["opcua"] = opcua
    path = tmp / "station.toml"
    path.write_text(tomli_w.dumps(table), encoding="utf-8")
    return path


def plc_map(config: Path, *flags: str) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "coral_mfg", "plc-map", "--config",
                          str(config), "--station", STATION, "--format", "json", *flags],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return list(json.loads(out.stdout))


@dataclass
class Station:
    proc: subprocess.Popen[str]
    config: Path
    events: Path
    opcua: str
    modbus: int
    http: int
    entries: list[dict[str, Any]] = field(default_factory=list)

    def entry(self, name: str) -> dict[str, Any]:
        return next(e for e in self.entries if e["name"] == f"{STATION}/{name}")

    def log(self) -> list[dict[str, Any]]:
        return jsonl(self.events)

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=10) as r:
            return str(r.read().decode())


def _start(tmp: Path, config: Path, *extra: str, env: dict[str, str] | None = None
           ) -> Station:
    opcua, modbus, http = free_port(), free_port(), free_port()
    events = tmp / "events.jsonl"
    proc = subprocess.Popen(
        [*APP, "--loop", "--config", str(config), "--station", STATION, "--events",
         str(events), "--opcua", f"opc.tcp://127.0.0.1:{opcua}", "--modbus",
         f"127.0.0.1:{modbus}", "--http", f"127.0.0.1:{http}", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})})
    return Station(proc, config, events, f"opc.tcp://127.0.0.1:{opcua}", modbus, http,
                   plc_map(config))


def _stop(station: Station) -> str:
    if station.proc.poll() is None:
        station.proc.send_signal(signal.SIGTERM)
    _, stderr = station.proc.communicate(timeout=120)
    assert station.proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    return stderr


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Station]:
    tmp = tmp_path_factory.mktemp("plc")
    s = _start(tmp, _config(tmp, opcua_admin_username=ADMIN),
               env={"CORAL_MFG_OPCUA_ADMIN_PASSWORD": ADMIN_PASSWORD})
    try:
        yield s
    finally:
        _stop(s)


# --- the clients ----------------------------------------------------------------------------


def _connect(url: str, user: str | None = None, password: str | None = None) -> Client:
    """A real OPC UA client, once the server listens (it starts after the pipeline)."""

    def attempt() -> Client | None:
        client = Client(url, timeout=10)
        if user is not None:
            client.set_user(user)
            client.set_password(password or "")
        try:
            client.connect()
        except (OSError, TimeoutError, ua.UaError):
            client._stop_own_tloop()
            return None
        return client

    return wait_for(attempt, f"the OPC UA server at {url}", timeout=180, poll=0.5)


@pytest.fixture
def opcua(station: Station) -> Iterator[Client]:
    client = _connect(station.opcua)
    try:
        yield client
    finally:
        client.disconnect()


@pytest.fixture
def modbus(station: Station) -> Iterator[ModbusTcpClient]:
    client = ModbusTcpClient("127.0.0.1", port=station.modbus, timeout=10)
    wait_for(client.connect, "the Modbus server", timeout=180, poll=0.5)
    try:
        yield client
    finally:
        client.close()


def read_ua(client: Client, entry: dict[str, Any]) -> Any:
    return client.get_node(entry["opcua"]).read_value()


def read_mb(client: ModbusTcpClient, entry: dict[str, Any]) -> Any:
    """A value as a PLC decodes it, by the documented rules: a bit; or registers, a 32-bit
    value high word first, -1 as 65535, fps times 10."""
    ref = entry["modbus"]
    if ref["table"] == "discrete_input":
        r = client.read_discrete_inputs(ref["address"], count=1)
        assert not r.isError(), r
        return bool(r.bits[0])
    r = client.read_input_registers(ref["address"], count=ref["count"])
    assert not r.isError(), r
    words = list(r.registers)
    if entry["type"] == "Double":
        return words[0] / 10
    if ref["count"] == 2:
        return (words[0] << 16) | words[1]
    return -1 if entry["type"] == "Int32" and words[0] == 0xFFFF else words[0]


class Events:
    """The station's OPC UA events, as a client subscribed to them receives them."""

    def __init__(self, client: Client) -> None:
        self.got: list[Any] = []
        self._lock = threading.Lock()
        kind = client.nodes.root.get_child(
            ["0:Types", "0:EventTypes", "0:BaseEventType", "2:CoralMfgEventType"])
        self.sub = client.create_subscription(50, self)
        self.sub.subscribe_events(client.nodes.server, kind)

    def event_notification(self, event: Any) -> None:
        with self._lock:
            self.got.append(event)

    def of(self, kind: str) -> list[Any]:
        with self._lock:
            return [e for e in self.got if e.Kind == kind]


# --- the running station ----------------------------------------------------------------------


def test_the_heartbeat_increments(station: Station, opcua: Client,
                                  modbus: ModbusTcpClient) -> None:
    beat = station.entry("health/heartbeat")
    assert beat["type"] == "UInt32" and beat["modbus"]["count"] == 2
    first = wait_for(lambda: read_ua(opcua, beat), "a first heartbeat")
    wait_for(lambda: read_ua(opcua, beat) >= first + 2, "two more beats over OPC UA")
    over_modbus = wait_for(lambda: read_mb(modbus, beat), "a heartbeat over Modbus")
    wait_for(lambda: read_mb(modbus, beat) > over_modbus, "the next beat over Modbus")
    toggle = station.entry("health/heartbeat_toggle")
    seen = {read_mb(modbus, toggle)}

    def flipped() -> bool:
        seen.add(read_mb(modbus, toggle))
        return len(seen) == 2

    wait_for(flipped, "the toggle", poll=0.05)
    assert read_ua(opcua, station.entry("health/ok")) is True


def test_a_zone_alarms_while_the_worker_is_in_it(station: Station, opcua: Client,
                                                  modbus: ModbusTcpClient) -> None:
    occupancy = station.entry("worker_safety/zones/floor/occupancy")
    alarm = station.entry("worker_safety/zones/floor/alarm")
    entries = station.entry("worker_safety/zones/floor/entries")
    assert (occupancy["type"], alarm["type"], entries["type"]) == ("Int32", "Boolean",
                                                                   "UInt64")
    events = Events(opcua)

    def state(read: Any, client: Any) -> tuple[Any, Any]:
        return read(client, occupancy), read(client, alarm)

    for read, client in ((read_ua, opcua), (read_mb, modbus)):
        for want, what in (((0, False), "the zone clear"), ((1, True), "the worker in it"),
                           ((0, False), "the worker out again")):

            def reads(r: Any = read, c: Any = client, w: Any = want) -> bool:
                return bool(state(r, c) == w)

            wait_for(reads, what, timeout=180, poll=0.05)
    assert read_ua(opcua, entries) >= 1 and read_mb(modbus, entries) >= 1
    entered = wait_for(lambda: events.of("keepout_enter"), "a keep-out entry event")
    assert entered[0].Camera == "worker_safety" and entered[0].Subject == "floor"
    assert entered[0].SourceName == f"{STATION}/worker_safety"
    assert entered[0].Severity >= 800


def test_counts_and_the_last_grade_follow_the_apples(station: Station, opcua: Client,
                                                     modbus: ModbusTcpClient) -> None:
    grade = station.entry("visual_inspection/last_grade")
    passed = station.entry("visual_inspection/last_grade_passed")
    index = station.entry("visual_inspection/last_grade_index")
    fresh = station.entry("visual_inspection/grades/fresh_apple")
    rotten = station.entry("visual_inspection/grades/rotten_apple")
    assert grade["modbus"] is None and grade["type"] == "String"

    def last(expected: str, ok: bool, number: int) -> bool:
        return bool(read_ua(opcua, grade) == expected and read_ua(opcua, passed) is ok
                    and read_mb(modbus, passed) is ok and read_mb(modbus, index) == number)

    wait_for(lambda: last("rotten_apple", False, 2), "a rotten apple last", timeout=180,
             poll=0.05)
    wait_for(lambda: last("fresh_apple", True, 1), "a fresh apple last", timeout=180,
             poll=0.05)
    counts = {e["name"]: read_ua(opcua, e) for e in (fresh, rotten)}
    assert all(n >= 1 for n in counts.values())
    # no more than the event log holds, and the same over Modbus
    graded = [e for e in station.log() if e["type"] == "graded"]
    assert counts[fresh["name"]] <= sum(e["grade"] == "fresh_apple" for e in graded)
    assert counts[rotten["name"]] <= sum(e["grade"] == "rotten_apple" for e in graded)
    wait_for(lambda: all(read_mb(modbus, e) == read_ua(opcua, e) for e in (fresh, rotten)),
             "the same counts over Modbus")


def test_the_reject_pulse_is_for_the_rotten_apple_only(station: Station, opcua: Client,
                                                       modbus: ModbusTcpClient) -> None:
    reject = station.entry("visual_inspection/reject")
    rejects = station.entry("visual_inspection/rejects")
    assert reject["modbus"]["table"] == "discrete_input" and reject["type"] == "Boolean"
    events = Events(opcua)
    wait_for(lambda: read_mb(modbus, reject), "the reject pulse on", timeout=180, poll=0.02)
    wait_for(lambda: not read_mb(modbus, reject), "the reject pulse off", poll=0.02)
    def fresh_tracks() -> set[int]:
        return {e["track"] for e in station.log() if e.get("type") == "graded"
                and e["grade"] == "fresh_apple" and e["stream"] == "visual_inspection"}

    before = fresh_tracks()
    # a rejected apple heard of as an event, and a fresh one graded meanwhile
    wait_for(lambda: events.of("reject") and fresh_tracks() - before, "a reject event, and a "
             "fresh apple after", timeout=180)
    heard = events.of("reject")
    graded = {e["track"]: e["grade"] for e in station.log() if e.get("type") == "graded"
              and e["stream"] == "visual_inspection"}
    for e in heard:
        assert e.Grade == "rotten_apple" and graded[e.Track] == "rotten_apple"
        assert e.Camera == "visual_inspection" and e.LatencyMs > 0
    assert not {e.Track for e in heard} & fresh_tracks()
    assert read_ua(opcua, rejects) >= 1
    metrics = station.get("/metrics")
    counted = re.search(r'coral_mfg_reject_latency_seconds_count\{output="modbus",'
                        r'stream="visual_inspection"\} (\S+)', metrics)
    assert counted and float(counted.group(1)) >= 1, metrics


def test_a_reject_line_kicks_the_failing_apple_as_it_crosses(tmp_path: Path) -> None:
    """With reject_line set, a reject is a failing object crossing that line in its first
    direction (the line is the event's subject), not a failing verdict settling."""
    end = {"name": "end", "points": [[0.3, 0.46], [1.0, 0.46]], "units": "relative",
           "directions": ["down", "up"]}
    config = tmp_path / "station.toml"
    config.write_text(tomli_w.dumps({"cameras": {"belt": {
        "input": str(video("apple-conveyor.mp4")), "roles": ["inspection"], "reject": True,
        "reject_line": "end", "lines": [end]}}}))
    s = _start(tmp_path, config)
    client = None

    def failing_crossings() -> dict[int, dict[str, Any]]:
        return {e["track"]: e for e in s.log()
                if e.get("type") == "line_crossed" and e["passed"] is False}

    try:
        client = _connect(s.opcua)
        events = Events(client)
        heard = wait_for(lambda: (h := events.of("reject")) and all(
            e.Track in failing_crossings() for e in h) and h, "a reject, and its crossing in "
            "the event log", timeout=180)
        crossings = failing_crossings()
        for e in heard:
            assert (e.Camera, e.Subject, e.Grade) == ("belt", "end", "rotten_apple")
            assert crossings[e.Track]["line"] == "end"
            assert crossings[e.Track]["direction"] == "down"
    finally:
        if client is not None:
            client.disconnect()
        _stop(s)


def test_the_addresses_are_the_ones_plc_map_prints(station: Station, opcua: Client,
                                                   modbus: ModbusTcpClient) -> None:
    for entry in station.entries:
        assert set(entry) == ENTRY_KEYS, entry
        assert entry["name"].startswith(f"{STATION}/")
        assert entry["opcua"].startswith("ns=2;s=CoralMfg/")
        if entry["modbus"] is not None:
            assert set(entry["modbus"]) == MODBUS_KEYS
            assert entry["modbus"]["table"] in ("discrete_input", "input_register")
    names = {e["name"] for e in station.entries}
    for name in ("health/heartbeat", "worker_safety/zones/floor/occupancy",
                 "worker_safety/zones/floor/alarm", "visual_inspection/reject"):
        assert f"{STATION}/{name}" in names
    # every node is there, of the type the map says
    for entry in station.entries:
        node = opcua.get_node(entry["opcua"])
        assert node.read_data_type_as_variant_type().name == entry["type"], entry
    # the table says the same addresses
    table = subprocess.run([sys.executable, "-m", "coral_mfg", "plc-map", "--config",
                            str(station.config), "--station", STATION], cwd=ROOT,
                           capture_output=True, text=True, timeout=120, check=True).stdout
    rows = {parts[0]: (parts[2], " ".join(parts[3:]))
            for parts in (line.split() for line in table.splitlines()[1:])}
    for entry in station.entries:
        node_id, where = rows[entry["name"]]
        assert node_id == entry["opcua"]
        ref = entry["modbus"]
        if ref is None:
            assert where == "-"
            continue
        kind = "DI" if ref["table"] == "discrete_input" else "IR"
        last = ref["address"] + ref["count"] - 1
        assert where == f"{kind} {ref['address']}" + (f"-{last}" if ref["count"] > 1 else "")
    # every address a Modbus client reads holds the value the OPC UA node holds
    steady = [e for e in station.entries if e["modbus"] is not None
              and not e["name"].endswith(("/fps", "/heartbeat", "/heartbeat_toggle"))]
    assert len(steady) >= 10

    def agree() -> bool:
        return all(read_mb(modbus, e) == read_ua(opcua, e) for e in steady)

    wait_for(agree, "Modbus and OPC UA agreeing on every value", timeout=180)
    fps = station.entry("visual_inspection/fps")
    wait_for(lambda: read_mb(modbus, fps) > 0 and read_ua(opcua, fps) > 0, "fps on both")


def test_only_the_admin_resets_counts_and_nothing_is_writable(station: Station,
                                                              opcua: Client) -> None:
    counts = [e for e in station.entries if "/grades/" in e["name"]]
    station_node = opcua.get_node(f"ns=2;s=CoralMfg/{STATION}")
    with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
        station_node.call_method("2:ResetCounts")
    alarm = opcua.get_node(station.entry("worker_safety/zones/floor/alarm")["opcua"])
    with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
        alarm.write_value(ua.Variant(False, ua.VariantType.Boolean))
    def total() -> int:
        return sum(int(read_ua(opcua, e)) for e in counts)

    before = wait_for(lambda: total() >= 3 and total(), "three apples counted", timeout=180)
    admin = _connect(station.opcua, ADMIN, ADMIN_PASSWORD)
    try:
        admin.get_node(f"ns=2;s=CoralMfg/{STATION}").call_method("2:ResetCounts")
    finally:
        admin.disconnect()
    wait_for(lambda: total() < before, "the counts reset")


def test_plc_poll_reads_both_protocols_and_says_when_it_reads(station: Station) -> None:
    """The commissioning client: one line once every protocol has read (what ``bench``
    waits for), each change with its node id or address, its totals on SIGTERM."""
    poll = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "plc-poll", "--config", str(station.config),
         "--station", STATION, "--every", "0.1", "--opcua", station.opcua,
         "--modbus", f"127.0.0.1:{station.modbus}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    out = poll.stdout
    assert out is not None
    threading.Thread(target=lambda: lines.extend(iter(out.readline, "")), daemon=True).start()
    beat = station.entry("health/heartbeat")
    modbus_at = f"IR {beat['modbus']['address']}"

    def beats(via: str, where: str) -> list[int]:
        return [int(line.split(" = ")[1].split()[0]) for line in list(lines)
                if f"  {via} " in line and f"{STATION}/health/heartbeat = " in line
                and f"({where})" in line]

    try:
        wait_for(lambda: any(line.startswith("reading every 0.1 s") for line in lines),
                 "the client reading")
        wait_for(lambda: len(beats("opcua", beat["opcua"])) >= 2, "heartbeats over OPC UA")
        wait_for(lambda: len(beats("modbus", modbus_at)) >= 2, "heartbeats over Modbus")
    finally:
        poll.send_signal(signal.SIGTERM)
        _, err = poll.communicate(timeout=60)
    assert poll.returncode == 0, err
    for via, where in (("opcua", beat["opcua"]), ("modbus", modbus_at)):
        seen = beats(via, where)
        assert seen == sorted(seen) and len(set(seen)) == len(seen), (via, seen)  # changes only
    totals = json.loads([line for line in err.splitlines() if line.startswith("{")][-1])
    assert totals["reads"] >= 4 and totals["errors"] == 0, totals
    assert isinstance(totals["reading_cpu_s"], float), totals


# --- blind, refusals, faults ------------------------------------------------------------------


def test_a_blind_camera_reads_as_an_alarm(tmp_path: Path) -> None:
    port = free_port()
    camera = _network_camera(port)
    config = _config(tmp_path, worker_input=f"http://127.0.0.1:{port}/stream.mjpg")
    s = _start(tmp_path, config)
    blind, reason = s.entry("worker_safety/blind"), s.entry("worker_safety/blind_reason")
    occupancy = s.entry("worker_safety/zones/floor/occupancy")
    alarm = s.entry("worker_safety/zones/floor/alarm")
    client: Client | None = None
    mb = ModbusTcpClient("127.0.0.1", port=s.modbus, timeout=10)
    try:
        client = _connect(s.opcua)
        wait_for(mb.connect, "the Modbus server", timeout=180, poll=0.5)
        events = Events(client)
        wait_for(lambda: read_ua(client, blind) is False and read_ua(client, occupancy) >= 0,
                 "the camera seeing", timeout=180)
        camera.kill()
        camera.wait(10)
        wait_for(lambda: read_ua(client, blind), "the camera blind", timeout=180)
        assert "NO SIGNAL" in read_ua(client, reason)
        assert read_ua(client, alarm) is True and read_ua(client, occupancy) == -1
        wait_for(lambda: read_mb(mb, blind) and read_mb(mb, alarm)
                 and read_mb(mb, occupancy) == -1, "blind over Modbus")
        heard = wait_for(lambda: events.of("camera_blind"), "the blind event")
        assert heard[0].Camera == "worker_safety"
        camera = _network_camera(port)
        wait_for(lambda: read_ua(client, blind) is False, "the camera back", timeout=180)
        assert read_ua(client, reason) == ""
        wait_for(lambda: read_mb(mb, occupancy) >= 0, "occupancy known again")
    finally:
        camera.kill()
        mb.close()
        if client is not None:
            client.disconnect()
        _stop(s)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--opcua", "opc.tcp://0.0.0.0:4840"], "needs Basic256Sha256 with the station's own "
         "certificate"),
        (["--opcua", "opc.tcp://0.0.0.0:4840", "--opcua_security", "none"],
         "security none is for loopback only"),
        (["--opcua", "opc.tcp://0.0.0.0:4840", "--opcua_certificate", "CERT"],
         "needs users"),
    ],
    ids=["no-certificate", "security-none", "no-users"],
)
def test_an_off_loopback_bind_without_security_is_refused(tmp_path: Path, flags: list[str],
                                                          message: str) -> None:
    flags = [f.replace("CERT", str(tmp_path / "station.der")) for f in flags]
    proc = subprocess.run([*APP, *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("coral-mfg: error: --opcua "), proc.stderr
    assert message in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "station.der").exists()  # nothing made before the refusal


def test_off_loopback_takes_an_encrypted_session_with_a_user(tmp_path: Path) -> None:
    """Bound to every address (read only from loopback here): the station's certificate
    is made on first start; a client needs Basic256Sha256 SignAndEncrypt and a user."""
    port, cert = free_port(), tmp_path / "pki" / "station.der"
    config = tmp_path / "station.toml"
    config.write_text(tomli_w.dumps({"opcua": {
        "opcua": f"opc.tcp://0.0.0.0:{port}", "opcua_certificate": str(cert),
        "opcua_username": "plc"}}))
    proc = subprocess.Popen([*APP, "--loop", "--config", str(config), "--station", STATION],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CORAL_MFG_OPCUA_PASSWORD": "plc-pw"})
    url = f"opc.tcp://127.0.0.1:{port}"
    client_cert, client_key = tmp_path / "client.der", tmp_path / "client.pem"
    try:
        wait_for(lambda: cert.exists() and cert.with_suffix(".key.pem").exists(),
                 "the station's certificate", timeout=180)
        assert cert.with_suffix(".key.pem").stat().st_mode & 0o077 == 0
        plain = Client(url, timeout=10)
        wait_for(lambda: _listening(port), "the OPC UA server", timeout=180)
        with pytest.raises(ua.UaError):  # no endpoint without security at all
            plain.connect()
        plain._stop_own_tloop()

        def secure(password: str) -> Client:
            client = Client(url, timeout=10)
            client.set_user("plc")
            client.set_password(password)
            _client_certificate(client, client_cert, client_key)
            client.set_security_string(
                f"Basic256Sha256,SignAndEncrypt,{client_cert},{client_key},{cert}")
            return client

        wrong = secure("not-it")
        with pytest.raises(ua.UaError):
            wrong.connect()
        wrong._stop_own_tloop()
        _hears_the_heartbeat(secure("plc-pw"))
    finally:
        stderr = _terminated(proc)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "plc-pw" not in stderr
    assert "made the station's certificate" in stderr


def test_off_loopback_takes_a_trusted_client_certificate_and_refuses_others(
        tmp_path: Path) -> None:
    """No users at all: a PLC whose certificate is in opcua_trusted_certs opens an encrypted
    session with it as its identity; a certificate not in the folder opens none."""
    port, cert = free_port(), tmp_path / "pki" / "station.der"
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    known = (trusted / "plc.der", tmp_path / "plc.pem")
    stranger = (tmp_path / "stranger.der", tmp_path / "stranger.pem")
    url = f"opc.tcp://127.0.0.1:{port}"
    maker = Client(url)
    for der, pem in (known, stranger):
        _client_certificate(maker, der, pem)
    maker._stop_own_tloop()
    config = tmp_path / "station.toml"
    config.write_text(tomli_w.dumps({"opcua": {
        "opcua": f"opc.tcp://0.0.0.0:{port}", "opcua_certificate": str(cert),
        "opcua_trusted_certs": str(trusted)}}))
    proc = subprocess.Popen([*APP, "--loop", "--config", str(config), "--station", STATION],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def holding(der: Path, pem: Path) -> Client:
        client = Client(url, timeout=10)
        client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{der},{pem},{cert}")
        client.load_client_certificate(str(der))
        client.load_private_key(str(pem))
        return client

    try:
        wait_for(lambda: cert.exists() and _listening(port), "the OPC UA server", timeout=180)
        outsider = holding(*stranger)
        with pytest.raises(ua.uaerrors.BadCertificateUntrusted):  # no secure channel at all
            outsider.connect()
        outsider._stop_own_tloop()
        _hears_the_heartbeat(holding(*known))
    finally:
        stderr = _terminated(proc)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def _hears_the_heartbeat(client: Client) -> None:
    """Connect, see the station's heartbeat go up, disconnect."""
    client.connect()
    try:
        beat = client.get_node(f"ns=2;s=CoralMfg/{STATION}/Health/Heartbeat")
        first = wait_for(beat.read_value, "a heartbeat")
        wait_for(lambda: beat.read_value() > first, "the next beat")
    finally:
        client.disconnect()


def _terminated(proc: subprocess.Popen[str]) -> str:
    """Stop a station with SIGTERM; its stderr."""
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    return stderr


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _client_certificate(client: Client, cert: Path, key: Path) -> None:
    if cert.exists():
        return
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    private = cert_gen.generate_private_key()
    made = cert_gen.generate_self_signed_app_certificate(
        private, "test plc", {"organizationName": "test"},
        [x509.UniformResourceIdentifier(client.application_uri), x509.DNSName("localhost")],
        [ExtendedKeyUsageOID.CLIENT_AUTH], 30)
    key.write_bytes(cert_gen.dump_private_key_as_pem(private))
    cert.write_bytes(made.public_bytes(Encoding.DER))


def test_faults_never_stop_inspection(tmp_path: Path) -> None:
    """The Modbus port taken by someone else, then freed; garbage sent to both servers:
    one line per fault, the faults in /healthz and /metrics, inspection going on."""
    taken, ua_taken = socket.socket(), socket.socket()
    port, ua_port = free_port(), free_port()
    for sock, number in ((taken, port), (ua_taken, ua_port)):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", number))
        sock.listen()
    s = _start(tmp_path, _config(tmp_path), "--modbus", f"127.0.0.1:{port}", "--opcua",
               f"opc.tcp://127.0.0.1:{ua_port}")
    s.modbus, s.opcua = port, f"opc.tcp://127.0.0.1:{ua_port}"
    try:
        def fault(kind: str) -> Any:
            return _health(s).get(kind, {}).get("error")

        def serving(kind: str) -> bool:
            return bool(_health(s)[kind]["error"] is None and _health(s)[kind]["listening"])

        for kind in ("modbus", "opcua"):
            wait_for(functools.partial(fault, kind), f"the {kind} fault in /healthz",
                     timeout=180)
            assert "in use" in _health(s)[kind]["error"]
            assert re.search(rf'coral_mfg_output_failing\{{output="{kind}"\}} 1',
                             s.get("/metrics"))
        frames = _frames(s)
        wait_for(lambda: _frames(s) > frames + 50, "inspection going on")
        taken.close()
        ua_taken.close()
        for kind in ("modbus", "opcua"):
            wait_for(functools.partial(serving, kind), f"{kind} listening once the port is "
                     "free", timeout=180)
        wait_for(lambda: _listening(int(s.opcua.rsplit(":", 1)[1])), "the OPC UA server",
                 timeout=180)
        for attempt in range(3):  # three misbehaving clients each
            _garbage(int(s.opcua.rsplit(":", 1)[1]), b"HELF\x04\x00\x00\x00" + bytes(attempt))
            _garbage(port, b"\x00\x01\x00\x07\x00\x06\x01\x04\x00\x00\x00\x01")
        wait_for(lambda: _health(s)["opcua"]["client_errors"] >= 3
                 and _health(s)["modbus"]["client_errors"] >= 3, "the client faults counted")
        assert re.search(r'coral_mfg_output_client_errors_total\{output="opcua"\} [3-9]',
                         s.get("/metrics"))
        frames = _frames(s)
        wait_for(lambda: _frames(s) > frames + 50, "inspection still going on")
        with ModbusTcpClient("127.0.0.1", port=port, timeout=10) as client:
            assert not client.read_discrete_inputs(0, count=2).isError()
    finally:
        taken.close()
        ua_taken.close()
        stderr = _stop(s)
    for kind in ("modbus", "opcua"):
        assert stderr.count(f"{kind}: cannot write (cannot listen on") == 1, stderr
    assert "error starting server" not in stderr
    # one line a fault at most (more close together are counted on the next line)
    for kind in ("opcua", "modbus"):
        assert 1 <= stderr.count(f"{kind}: a client's request failed") <= 3, stderr


def _health(s: Station) -> dict[str, Any]:
    try:
        body = s.get("/healthz")
    except urllib.error.HTTPError as exc:  # 503 while a camera is not live: a body still
        body = exc.read().decode()
    except OSError:
        return {}
    return dict(json.loads(body)["outputs"])


def _frames(s: Station) -> int:
    return len(s.log())


def _garbage(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        try:
            while sock.recv(4096):
                pass
        except OSError:  # reset or timed out: either way the server has had it
            pass


def test_an_anomaly_model_adds_its_count_to_the_map(tmp_path: Path) -> None:
    """A camera scored for anomalies has an ``anomalous`` count beside its grades; one
    without a classifier counts its verdicts, normal and anomalous."""
    model = tmp_path / "normal"
    model.mkdir()
    config = tmp_path / "station.toml"
    config.write_text(tomli_w.dumps({"station": "line-9", "anomaly": str(model), "cameras": {
        "belt": {"input": str(video("apple-conveyor.mp4")), "roles": ["inspection"]},
        "tray": {"input": str(video("apple-conveyor.mp4")), "roles": ["inspection"],
                 "classify": False}}}))
    out = subprocess.run([sys.executable, "-m", "coral_mfg", "plc-map", "--config",
                          str(config), "--format", "json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    names = [e["name"] for e in json.loads(out.stdout)]
    grades = {camera: [n.rsplit("/", 1)[1] for n in names
                       if n.startswith(f"line-9/{camera}/grades/")] for camera in ("belt", "tray")}
    assert grades == {"belt": ["fresh_apple", "rotten_apple", "anomalous"],
                      "tray": ["normal", "anomalous"]}
