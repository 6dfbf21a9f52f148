"""Several Edge TPUs: one inference process each, the frames shared, a lost one survived.

No Edge TPU here: the stand-in libedgetpu (tests/fake_edgetpu/) presents two
devices (``FAKE_EDGETPU_DEVICES``), opens the one the delegate's ``device``
option names, and reads each device's mode from a file of its own, so a test
can unplug one while the other works. The application is the real one, on the
sample videos, with real processes and real signals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coral_mfg.config.settings import load_settings
from coral_mfg.core.events import Stamper
from coral_mfg.inference import device_lock
from coral_mfg.inference.client import ProcessState, Work
from coral_mfg.inference.errors import ProcessDownError, ProcessStartError
from coral_mfg.inference.plan import Labels
from coral_mfg.inference.pool import PROBE_S, ProcessPool, ProcessSet, process_load
from coral_mfg.inference.protocol import LANES, ModelSpec, ProcessConfig
from coral_mfg.inference.runtime import Device
from coral_mfg.inference.startup import current_device, start_inference
from tests.conftest import ROOT, frames, free_port, jsonl, wait_for
from tests.test_accelerator import _env, _kinds, _processes, _run

TWO = "usb:0,usb:1"
#: what every Edge TPU process invokes on the stand-in while starting: the classifier once,
#: then the known-answer crop; more is frames served
START_INVOKES = 2


def _two(lib: Path, tmp: Path, **extra: str) -> dict[str, str]:
    """The stand-in with two USB devices, each with its own mode file (``mode-usb_0``)."""
    for key in ("usb_0", "usb_1"):
        (tmp / f"mode-{key}").write_text("ok")
    return _env(lib, tmp, FAKE_EDGETPU_DEVICES=TWO,
                FAKE_EDGETPU_MODE_FILE=str(tmp / "mode-%s"), **extra)


def _opened(tmp: Path) -> list[tuple[int, str]]:
    """(process id, device) for each device a process opened, in order."""
    path = tmp / "fake.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(pid), what.split("device=", 1)[1]) for pid, what in
            (line.split(" ", 1) for line in lines) if what.startswith("create device=")]


def _invokes(tmp: Path) -> Counter[int]:
    path = tmp / "fake.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(int(line.split(" ", 1)[0]) for line in lines if line.endswith(" invoke"))


def _serving(tmp: Path, device: str) -> int | None:
    """The process now driving ``device`` once it has served frames (invoked beyond its
    start), else None."""
    pids = [pid for pid, d in _opened(tmp) if d == device]
    if not pids:
        return None
    return pids[-1] if _invokes(tmp)[pids[-1]] > START_INVOKES else None


def _frames_on(events: Path, device: str) -> int:
    return sum(1 for e in jsonl(events) if e["type"] == "frame" and e["device"] == device)


def _more_frames(events: Path, device: str, n: int = 10) -> None:
    before = _frames_on(events, device)
    wait_for(lambda: _frames_on(events, device) >= before + n, what=f"{n} frames on {device}")


# --- the whole application on two stand-in devices ------------------------------------------


def test_two_edgetpus_share_the_frames(fake_libedgetpu: Path, tmp_path: Path) -> None:
    """Both devices serve frames. The run loops until both have (a device whose process
    comes up later, on a loaded machine, still gets its share), then stops."""
    events = tmp_path / "events.jsonl"
    app = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--loop", "--no-realtime",
         "--edgetpu_devices", TWO, "--events", str(events)],
        cwd=ROOT, env=_two(fake_libedgetpu, tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)

    def both_serve() -> bool:
        opened = _opened(tmp_path)
        invokes = _invokes(tmp_path)
        return len(opened) == 2 and all(invokes[pid] > START_INVOKES for pid, _ in opened)

    waited = False
    try:
        wait_for(lambda: app.poll() is not None or both_serve(), "both devices serving")
        waited = True
    finally:
        app.send_signal(signal.SIGTERM)
        _, stderr = app.communicate(timeout=60)
        if not waited:  # what the run said, for the failure's report
            print(stderr[-6000:], _opened(tmp_path), _invokes(tmp_path), file=sys.stderr)
    assert app.returncode == 0, stderr
    opened = _opened(tmp_path)
    assert sorted(d for _, d in opened) == ["usb:0", "usb:1"]  # one process per device
    assert len({pid for pid, _ in opened}) == 2
    assert both_serve(), _invokes(tmp_path)
    assert "2 edgetpu process(es)" in stderr
    frames_seen = [e for e in jsonl(events) if e["type"] == "frame"]
    assert frames_seen and all(e["device"] == "edgetpu" for e in frames_seen)
    assert jsonl(events)[-1]["accelerator"] == {"device": "edgetpu", "lost": 0,
                                                  "restored": 0, "fallback": 0,
                                                  "failed_frames": 0}


def test_each_edgetpu_load_is_shown_in_metrics_status_and_bench(fake_libedgetpu: Path,
                                                                 tmp_path: Path) -> None:
    """Per device: its process, inference time, busy share and capacity, where an
    operator looks (the metrics, the web view's status) and in the benchmark."""
    env = _two(fake_libedgetpu, tmp_path)
    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--loop", "--edgetpu_devices", TWO,
         "--http", f"127.0.0.1:{port}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)

    def read(path: str) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return str(r.read().decode())
        except OSError:
            return ""

    def capacities() -> dict[str, float]:
        out = {}
        for line in read("/metrics").splitlines():
            if line.startswith("coral_mfg_process_capacity_fps{"):
                device = line.split('device="')[1].split('"')[0]
                out[device] = float(line.rsplit(" ", 1)[1])
        return out

    try:
        wait_for(lambda: app.poll() is not None or (
            len(c := capacities()) == 2 and all(v > 0 for v in c.values())),
            "both devices' capacity in /metrics")
        assert app.poll() is None
        metrics = read("/metrics")
        status = json.loads(read("/api/status"))
    finally:
        app.send_signal(signal.SIGTERM)
        _, stderr = app.communicate(timeout=60)
    assert app.returncode == 0, stderr
    for device, process in (("usb:0", "edgetpu-0"), ("usb:1", "edgetpu-1")):
        key = f'{{device="{device}",process="{process}"}}'
        assert f"coral_mfg_process_up{key} 1.0" in metrics
        assert f"coral_mfg_process_busy_ratio{key}" in metrics
        assert f"coral_mfg_process_inference_ms{key}" in metrics
    shown = {p["device"]: p for p in status["accelerator"]["processes"]}
    assert set(shown) == {"usb:0", "usb:1"} and all(p["state"] == "up"
                                                   for p in shown.values())
    assert all(p["median_ms"] > 0 and p["capacity_fps"] > 0 for p in shown.values())

    result = subprocess.run(
        [sys.executable, "-m", "coral_mfg", "bench", "--seconds", "3", "--edgetpu_devices",
         TWO], cwd=ROOT, env=_two(fake_libedgetpu, tmp_path), capture_output=True, text=True,
        timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    devices = json.loads(result.stdout.strip().splitlines()[-1])["devices"]
    assert [d["device"] for d in devices] == ["usb:0", "usb:1"]
    assert all(d["capacity_fps"] > 0 and 0 < d["busy_share"] <= 1 for d in devices)


@pytest.fixture
def two_device_app(fake_libedgetpu: Path,
                   tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A looping run on both stand-in devices (auto: the CPU could take over)."""
    events = tmp_path / "events.jsonl"
    app = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--loop", "--edgetpu_devices", TWO,
         "--inference_timeout", "2", "--edgetpu_retry_seconds", "2", "--events", str(events)],
        cwd=ROOT, env=_two(fake_libedgetpu, tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _serving(tmp_path, "usb:0") and _serving(tmp_path, "usb:1"),
                 what="both devices serving frames")
        yield app, events
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate(timeout=30)


def _stop(app: subprocess.Popen[str], events: Path) -> dict[str, Any]:
    app.send_signal(signal.SIGTERM)
    _, stderr = app.communicate(timeout=30)
    assert app.returncode == 0, stderr
    assert "Traceback" not in stderr
    summary = jsonl(events)[-1]
    assert summary["type"] == "summary"
    return dict(summary["accelerator"])


@pytest.mark.slow
def test_a_killed_edgetpu_process_is_replaced_while_the_other_serves(
    two_device_app: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    app, events = two_device_app
    victim = _serving(tmp_path, "usb:1")
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    lost = wait_for(lambda: _kinds(events, "accelerator_lost"), what="the loss")
    assert lost[0]["worker"] == "edgetpu-1" and lost[0]["edgetpu_device"] == "usb:1"
    assert lost[0]["device"] == "edgetpu" and "SIGKILL" in lost[0]["reason"]
    restored = wait_for(lambda: _kinds(events, "accelerator_restored"), what="the restart")
    assert restored[0]["worker"] == "edgetpu-1" and restored[0]["edgetpu_device"] == "usb:1"
    wait_for(lambda: (_serving(tmp_path, "usb:1") or victim) != victim,
             what="the new usb:1 process serving")
    _more_frames(events, "edgetpu")
    assert not _kinds(events, "accelerator_fallback")
    counts = _stop(app, events)
    assert counts["lost"] == 1 and counts["restored"] == 1 and counts["fallback"] == 0


@pytest.mark.slow
def test_auto_falls_back_only_when_every_edgetpu_fails_and_returns_when_one_answers(
    two_device_app: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    app, events = two_device_app
    (tmp_path / "mode-usb_0").write_text("abort:1")  # usb:0 aborts its process at every invoke

    def opened(device: str) -> int:
        return sum(1 for _, d in _opened(tmp_path) if d == device)

    # usb:0 fails again and again (3 restarts, each aborting): failing, yet usb:1 serves
    wait_for(lambda: opened("usb:0") >= 4, what="usb:0 to fail 3 restarts")
    lost = _kinds(events, "accelerator_lost")
    assert [e["edgetpu_device"] for e in lost] == ["usb:0"] and "SIGABRT" in lost[0]["reason"]
    _more_frames(events, "edgetpu")  # all usb:1's
    assert not _kinds(events, "accelerator_fallback")

    (tmp_path / "mode-usb_1").write_text("abort:1")  # now both: the CPU takes over
    fallback = wait_for(lambda: _kinds(events, "accelerator_fallback"), what="the fallback")
    assert fallback[0]["device"] == "cpu" and fallback[0]["from"] == "edgetpu"
    assert "usb:0: " in fallback[0]["reason"] and "usb:1: " in fallback[0]["reason"]
    _more_frames(events, "cpu")

    (tmp_path / "mode-usb_1").write_text("ok")  # usb:1 answers again; usb:0 stays broken
    back = wait_for(lambda: [e for e in _kinds(events, "accelerator_restored")
                             if e.get("from") == "cpu"], what="the return to the Edge TPUs")
    assert back[0]["device"] == "edgetpu"
    _more_frames(events, "edgetpu")
    counts = _stop(app, events)
    assert counts["fallback"] == 1 and counts["lost"] >= 2


def _usb(root: Path, name: str, bus: int, dev: int, ids: tuple[str, str] = ("18d1", "9302")
         ) -> Path:
    """A USB Coral in a fake sysfs tree, with its device node."""
    folder = root / "sys" / "bus" / "usb" / "devices" / name
    folder.mkdir(parents=True)
    for key, value in (("idVendor", ids[0]), ("idProduct", ids[1]), ("busnum", str(bus)),
                       ("devnum", str(dev)), ("speed", "5000")):
        (folder / key).write_text(value + "\n")
    node = root / "dev" / "bus" / "usb" / f"{bus:03d}" / f"{dev:03d}"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.touch()
    return folder


def _tree(root: Path) -> dict[str, str]:
    (root / "sys" / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)
    return {"CORAL_MFG_SYSFS": str(root / "sys"), "CORAL_MFG_DEV": str(root / "dev")}


def test_all_runs_one_process_on_every_coral_sysfs_shows(fake_libedgetpu: Path,
                                                         tmp_path: Path) -> None:
    _usb(tmp_path, "2-1", 2, 3)
    _usb(tmp_path, "2-2", 2, 4)
    env = _two(fake_libedgetpu, tmp_path, **_tree(tmp_path))
    result = _run(env, "--edgetpu_devices", "all", "--no-realtime", "--max_frames", "10")
    assert result.returncode == 0, result.stderr
    assert sorted(d for _, d in _opened(tmp_path)) == ["usb:0", "usb:1"]
    assert "Edge TPU usb:0: USB 2-1 (18d1:9302)" in result.stderr
    assert "Edge TPU usb:1: USB 2-2 (18d1:9302)" in result.stderr
    # each process held its own Coral's lock, named by its port
    for port, device in (("2-1", "usb:0"), ("2-2", "usb:1")):
        record = json.loads((tmp_path / f"coral-mfg-usb-{port}.lock").read_text())
        assert record["device"] == device


def test_all_leaves_out_a_coral_another_station_holds(fake_libedgetpu: Path,
                                                      tmp_path: Path) -> None:
    _usb(tmp_path, "2-1", 2, 3)
    _usb(tmp_path, "2-2", 2, 4)
    env = _two(fake_libedgetpu, tmp_path, **_tree(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from coral_mfg.inference import device_lock; "
         "device_lock.claim('usb-2-1', 4242, 'usb:0'); print('held', flush=True); "
         "sys.stdin.read()"],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = _run(env, "--edgetpu_devices", "all", "--no-realtime", "--max_frames", "5")
    finally:
        holder.communicate("", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Edge TPU usb:0 left out: in use by coral-mfg (pid 4242)" in result.stderr
    assert [d for _, d in _opened(tmp_path)] == ["usb:1"]


@pytest.mark.parametrize(
    ("given", "needle"),
    [("usb:x", "('usb:x' is not one)"), ("usb:0,usb:0", "('usb:0' is named twice)"),
     ("usb:1,usb:01", "('usb:1' is named twice)"), ("all,usb:0", "('all' is not one)"),
     ("usb,usb:1", "('usb' may be any USB Edge TPU; name one, like usb:0)")],
)
def test_bad_device_lists_are_refused_in_one_line(tmp_path: Path, given: str,
                                                   needle: str) -> None:
    result = _run(_env(None, tmp_path), "--edgetpu_devices", given)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coral-mfg: error: ") and needle in lines[0]
    config = tmp_path / "station.toml"
    config.write_text(f"edgetpu_devices = {json.dumps(given.split(','))}\n")
    result = _run(_env(None, tmp_path), "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("coral-mfg: error: ") and needle in lines[-1]
    assert "Traceback" not in result.stderr


def test_two_strings_naming_one_coral_are_refused(fake_libedgetpu: Path, tmp_path: Path) -> None:
    _usb(tmp_path, "2-1", 2, 3)
    env = _two(fake_libedgetpu, tmp_path, **_tree(tmp_path))
    result = _run(env, "--edgetpu_devices", "usb:0,:0")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("coral-mfg: error: edgetpu_devices names one Edge TPU twice: usb:0 "
                           "and :0 are both USB 2-1"), last
    assert _opened(tmp_path) == []  # refused before any device was touched
    assert not _processes(os.getpid())


def test_a_listed_coral_sysfs_does_not_show_is_refused(fake_libedgetpu: Path,
                                                       tmp_path: Path) -> None:
    _usb(tmp_path, "2-1", 2, 3)
    env = _two(fake_libedgetpu, tmp_path, **_tree(tmp_path))
    result = _run(env, "--device", "edgetpu", "--edgetpu_devices", TWO)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("coral-mfg: error: Edge TPU usb:1 is not shown by sysfs (it shows "
                           "usb:0 (2-1)): plug it in, or leave it out of edgetpu_devices"), last
    assert _opened(tmp_path) == []


def test_doctor_probes_every_listed_edgetpu(fake_libedgetpu: Path, tmp_path: Path) -> None:
    _usb(tmp_path, "2-1", 2, 3)
    _usb(tmp_path, "2-2", 2, 4)
    env = _two(fake_libedgetpu, tmp_path, **_tree(tmp_path))
    (tmp_path / "mode-usb_1").write_text("crash")
    doctor = subprocess.run([sys.executable, "-m", "coral_mfg", "doctor", "--edgetpu_devices",
                             "all"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=180, check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "[ok ] Edge TPU devices: 2 found: usb:0 (2-1), usb:1 (2-2)" in doctor.stdout
    probe = next(x for x in doctor.stdout.splitlines() if "Edge TPU probe: " in x)
    assert probe.startswith("[-- ]")
    assert "Edge TPU usb:1 did not start: " in probe and "killed by SIGSEGV" in probe
    assert "usb:0 did not start" not in probe
    assert sorted(d for _, d in _opened(tmp_path)) == ["usb:0", "usb:1"]


# --- the Coral found again before each start ----------------------------------------------


def _config(name: str, lock: str, device: str = "usb:1") -> ProcessConfig:
    spec = ModelSpec("m.tflite", False, (8, 8), "uint8")
    return ProcessConfig(name=name, runtime="-", device="edgetpu", edgetpu_device=device,
                         edgetpu_library="libedgetpu.so.1", cpu_threads=1, detector=spec,
                         classifier=spec, arena="", edgetpu_lock=lock, edgetpu_name=device)


def test_a_coral_is_found_again_by_its_port_before_each_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a USB Coral loads its firmware and renumbers the others: the index each
    process is given is the one its Coral has just before it starts."""
    for key, value in _tree(tmp_path).items():
        monkeypatch.setenv(key, value)
    first = _usb(tmp_path, "2-1", 2, 3)
    _usb(tmp_path, "2-2", 2, 4)
    placed = frozenset({"usb-2-1", "usb-2-2"})
    config = _config("edgetpu-1", "usb-2-2")
    assert current_device(placed, config).edgetpu_device == "usb:1"
    # 2-2 replugged, its firmware not loaded yet: libedgetpu now counts it first
    (tmp_path / "sys" / "bus" / "usb" / "devices" / "2-2" / "idVendor").write_text("1a6e\n")
    (tmp_path / "sys" / "bus" / "usb" / "devices" / "2-2" / "idProduct").write_text("089a\n")
    assert current_device(placed, config).edgetpu_device == "usb:0"
    # a Coral sysfs no longer shows is not opened at all
    for child in first.iterdir():
        child.unlink()
    first.rmdir()
    with pytest.raises(ProcessStartError, match=r"Edge TPU usb:0 \(USB 2-1\) is no longer "
                                                r"shown by sysfs") as err:
        current_device(placed, _config("edgetpu-0", "usb-2-1", "usb:0"))
    assert err.value.kind == "no_device"
    # one sysfs never showed is left as the user named it
    unplaced = _config("edgetpu-0", f"{device_lock.ANY_DEVICE}-usb:1")
    assert current_device(placed, unplaced) is unplaced


# --- which process takes a request, and the load figures -----------------------------------


@pytest.fixture
def idle_pool() -> Iterator[ProcessPool]:
    """A pool of two Edge TPU processes that are never started: the choice of process
    alone, with the processes' states and times set by the test."""
    configs = tuple(_config(f"edgetpu-{i}", f"usb-2-{i + 1}", f"usb:{i}") for i in range(2))
    pool = ProcessPool(
        ProcessSet(Device.EDGETPU, configs, "test", names=("usb:0", "usb:1")), None,
        Labels({}, {0: "a"}, {}, frozenset()), timeout=60.0, on_event=lambda event: None,
        stamper=Stamper("test"))
    for m in pool.members["primary"]:
        m.client.state = ProcessState.UP
    yield pool
    pool.release()


def test_equal_devices_take_requests_in_turn(idle_pool: ProcessPool) -> None:
    a, b = idle_pool.members["primary"]
    order = []
    for _ in range(4):
        taken = idle_pool.take(None)
        order.append(taken.member)
        idle_pool.give_back(taken)
    assert order == [a, b, a, b]


def test_a_request_goes_where_it_is_answered_soonest(idle_pool: ProcessPool) -> None:
    a, b = idle_pool.members["primary"]
    held = idle_pool.take(None)
    assert held.member is a
    assert idle_pool.take(None).member is b  # a is busy, b idle
    idle_pool.give_back(held)
    # a quick device with a request in hand beats a slow idle one ...
    a.client.call_s, b.client.call_s = 0.010, 0.100
    b.taken.clear()
    first = idle_pool.take(None)
    second = idle_pool.take(None)
    assert first.member is a and second.member is a
    # ... until its lanes are all taken
    assert len(a.taken) == LANES and idle_pool.take(None).member is b
    # a frame's crops go to the process that detected it, while it has a free lane
    idle_pool.give_back(first)
    assert idle_pool.take(b).member is b
    assert idle_pool.take(a).member is a


def test_a_process_passed_over_for_a_while_gets_the_next_request(
        idle_pool: ProcessPool) -> None:
    """An estimate from a slow first call must not starve a process for ever, and a process
    that hung while idle must be given a request, to be found out by its timeout."""
    a, b = idle_pool.members["primary"]
    a.client.call_s, b.client.call_s = 0.010, 0.100
    a.given_at, b.given_at = 100.0, 100.0
    assert ProcessPool._soonest([a, b], now=100.0 + PROBE_S / 2) is a  # the quick one
    b.given_at = 100.0 - PROBE_S
    assert ProcessPool._soonest([a, b], now=100.0 + PROBE_S / 2) is b  # idle too long


def test_requests_wait_for_a_lane_and_fail_when_none_is_up(idle_pool: ProcessPool) -> None:
    a, b = idle_pool.members["primary"]
    b.client.state = ProcessState.DOWN
    assert idle_pool.lane(0) is not None and idle_pool.lane(LANES) is None  # b's slots idle
    taken = [idle_pool.take(None) for _ in range(LANES)]
    assert all(t.member is a for t in taken)
    later = threading.Timer(0.05, idle_pool.give_back, [taken[0]])
    later.start()
    assert idle_pool.take(None).member is a  # waited for the lane given back
    later.join()
    a.client.state = ProcessState.DOWN
    with pytest.raises(ProcessDownError, match="no edgetpu inference process is up"):
        idle_pool.take(None)


def test_fallback_needs_every_edgetpu_failing(idle_pool: ProcessPool) -> None:
    idle_pool.sets["fallback"] = idle_pool.sets["primary"]  # any set: only the rule is tested
    a, b = idle_pool.members["primary"]
    a.client.state = ProcessState.DOWN
    for t in (1.0, 2.0, 3.0):
        a.strike(t + 1e9)
    assert not idle_pool._should_fall_back()  # b answers
    b.client.state = ProcessState.DOWN
    b.strike(1e9)
    assert not idle_pool._should_fall_back()  # b failed once only
    b.strike(1e9)
    b.strike(1e9)
    assert idle_pool._should_fall_back()


def test_load_figures_from_the_work_done() -> None:
    work = [Work(80.0, 1.0, True),  # long before the window
            Work(95.2, 0.5, True),  # 0.2 s of it in the window (95 to 100)
            Work(96.0, 0.25, False), Work(97.0, 0.5, True), Work(99.0, 1.0, True)]
    load = process_load("edgetpu-0", "usb:0", ProcessState.UP, work, first_up=0.0, now=100.0,
                        window=5.0)
    assert load.busy_share == pytest.approx((0.2 + 0.25 + 0.5 + 1.0) / 5.0)
    assert load.median_ms == pytest.approx(750.0)  # of 1.0, 0.5, 0.5, 1.0 s
    assert load.capacity_fps == pytest.approx(4 / 3.25)  # 4 frames in 3.25 s of work
    young = process_load("edgetpu-0", "usb:0", ProcessState.UP, work, first_up=98.0,
                         now=100.0, window=5.0)
    assert young.busy_share == pytest.approx(1.0 / 2.0)  # measured over the 2 s it was up
    packed = [Work(99.5, 0.6, True), Work(100.0, 0.6, True)]  # replies' times overlap a little
    assert process_load("edgetpu-0", "usb:0", ProcessState.UP, packed, first_up=99.0,
                        now=100.0).busy_share == 1.0
    idle = process_load("cpu-0", "cpu", ProcessState.DOWN, [], first_up=None, now=1.0)
    assert (idle.busy_share, idle.median_ms, idle.capacity_fps) == (0.0, 0.0, 0.0)


def test_two_processes_share_real_requests_and_report_their_load(
    fake_libedgetpu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _two(fake_libedgetpu, tmp_path).items():
        monkeypatch.setenv(key, value)
    models = load_settings({"edgetpu_devices": TWO}).models
    inference = start_inference(models, lambda event: None, Stamper("test"))
    pool = inference.pool
    try:
        assert pool.device is Device.EDGETPU and len(pool.clients()) == 2
        image = frames("apple-conveyor.mp4")[0]
        errors: list[BaseException] = []

        def work(slot: int) -> None:
            try:
                for _ in range(8):
                    lane = pool.lane(slot)
                    assert lane is not None
                    lane.detect(image)
                    lane.class_scores(image, [(0, 0, 64, 64), (64, 64, 160, 160)])
            except BaseException as exc:  # reported by the test, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(pool.slots)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        load = pool.load()
        assert [(x.process, x.device, x.state) for x in load] == [
            ("edgetpu-0", "usb:0", ProcessState.UP), ("edgetpu-1", "usb:1", ProcessState.UP)]
        for x in load:
            assert 0.0 < x.busy_share <= 1.0
            assert x.median_ms > 0 and x.capacity_fps > 0
        served = [sum(w.frame for w in c.work()) for c in pool.clients()]
        assert sum(served) == 8 * pool.slots and all(served), served
    finally:
        pool.close()
