"""Inference in supervised processes, tested with real processes and real signals.

No Edge TPU here: the Edge TPU paths run against the stand-in libedgetpu built
from tests/fake_edgetpu/, loaded by LiteRT's real external-delegate code in a
real inference process. The CPU processes run the real models.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coral_mfg.inference.discovery import Coral
from coral_mfg.inference.errors import ProcessStartError
from coral_mfg.inference.process import _message
from coral_mfg.inference.runtime import (
    edgetpu_failure,
    no_device_message,
    runtime_backend,
)
from tests.conftest import ROOT, jsonl, wait_for

PROCESS_MODULE = "coral_mfg.inference.process"


def _env(lib: Path | None, tmp: Path, **extra: str) -> dict[str, str]:
    """The stand-in on the loader's path, answering the known-answer crop rightly; each
    test with its own device locks."""
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    if lib is not None:
        env["LD_LIBRARY_PATH"] = str(lib)
        env["FAKE_EDGETPU_OUTPUT"] = str(lib / "right_answer.bin")
    env["FAKE_EDGETPU_LOG"] = str(tmp / "fake.log")
    env["CORAL_MFG_LOCK_DIR"] = str(tmp)
    env.update(extra)
    return env


def _run(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coral_mfg", "--headless", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)



def _fake_log(tmp: Path) -> list[tuple[int, str]]:
    path = tmp / "fake.log"
    if not path.exists():
        return []
    return [(int(line.split(" ", 1)[0]), line.split(" ", 1)[1])
            for line in path.read_text().splitlines()]




def _processes(app_pid: int) -> list[int]:
    """The inference processes whose parent is ``app_pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == app_pid and PROCESS_MODULE in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- the Edge TPU path, on the stand-in runtime ----------------------------------------------


def test_one_delegate_for_both_models_through_litert(fake_libedgetpu: Path,
                                                     tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    result = _run(_env(fake_libedgetpu, tmp_path, FAKE_EDGETPU_MODE="ok"), "--no-realtime",
                  "--max_frames", "15", "--events", str(events))
    assert result.returncode == 0, result.stderr
    log = _fake_log(tmp_path)
    pids = {pid for pid, _ in log}
    assert len(pids) == 1  # one inference process drives the device
    what = [w for _, w in log]
    assert what.count("create") == 1  # the delegate is loaded once ...
    # ... and applied to both interpreters: the CPU-built detector gives it nothing to
    # claim, the Edge TPU classifier its one edgetpu-custom-op
    assert sorted(w for w in what if w.startswith("prepare")) == [
        "prepare claimed=0", "prepare claimed=1"]
    assert what.count("invoke") >= 2  # the warm-up, then the graded crops
    frames = [e for e in jsonl(events) if e["type"] == "frame"]
    assert frames and all(e["device"] == "edgetpu" for e in frames)
    summary = jsonl(events)[-1]
    assert summary["accelerator"] == {"device": "edgetpu", "lost": 0, "restored": 0,
                                      "fallback": 0, "failed_frames": 0}
    assert "1 edgetpu process(es)" in result.stderr


PROBES = [
    pytest.param("crash", "killed by SIGSEGV while building the detector interpreter",
                 id="crash"),
    pytest.param("hang", "(hung)", id="hang"),
    pytest.param("nodevice", "no Edge TPU found (Failed to load delegate from libedgetpu.so.1; "
                 "fake libedgetpu: no Edge TPU device found)", id="no-device"),
    pytest.param(None, "the Edge TPU runtime libedgetpu.so.1 is not installed", id="no-runtime"),
]


@pytest.mark.parametrize(("mode", "message"), PROBES)
def test_auto_goes_on_on_the_cpu_when_the_probe_fails(
    fake_libedgetpu: Path, tmp_path: Path, mode: str | None, message: str
) -> None:
    lib = fake_libedgetpu if mode is not None else None
    events = tmp_path / "events.jsonl"
    result = _run(_env(lib, tmp_path, FAKE_EDGETPU_MODE=mode or "ok"), "--no-realtime",
                  "--max_frames", "5", "--inference_timeout", "1", "--events", str(events))
    assert result.returncode == 0, result.stderr
    note = next(line for line in result.stderr.splitlines() if "Edge TPU not used: " in line)
    assert message in note and "--device cpu" in note
    assert all(e["device"] == "cpu" for e in jsonl(events) if e["type"] == "frame")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("mode", "message"), PROBES)
def test_device_edgetpu_exits_2_in_one_line_when_the_probe_fails(
    fake_libedgetpu: Path, tmp_path: Path, mode: str | None, message: str
) -> None:
    lib = fake_libedgetpu if mode is not None else None
    result = _run(_env(lib, tmp_path, FAKE_EDGETPU_MODE=mode or "ok"), "--device", "edgetpu",
                  "--inference_timeout", "1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("coral-mfg: error: ") and message in lines[-1]
    assert "Traceback" not in result.stderr
    if mode in ("crash", "hang"):  # the versions, so the user can match the pair
        assert "libedgetpu " in lines[-1] and "ai_edge_litert " in lines[-1]
    assert not _processes(os.getpid())


def test_device_edgetpu_passes_the_device_string(fake_libedgetpu: Path, tmp_path: Path) -> None:
    result = _run(_env(fake_libedgetpu, tmp_path), "--device", "edgetpu", "--edgetpu_device",
                  "usb:1")
    assert result.returncode == 2
    assert [w for _, w in _fake_log(tmp_path)] == ["create device=usb:1"]


def test_device_cpu_never_loads_the_edgetpu_runtime(fake_libedgetpu: Path,
                                                    tmp_path: Path) -> None:
    result = _run(_env(fake_libedgetpu, tmp_path, FAKE_EDGETPU_MODE="ok"), "--device", "cpu",
                  "--no-realtime", "--max_frames", "3")
    assert result.returncode == 0, result.stderr
    assert _fake_log(tmp_path) == []


@pytest.mark.parametrize(
    ("mode", "ok", "needle"),
    [("ok", True, "both models built and answered"),
     ("crash", False, "killed by SIGSEGV while building the detector interpreter")],
)
def test_doctor_runs_the_probe(fake_libedgetpu: Path, tmp_path: Path, mode: str, ok: bool,
                               needle: str) -> None:
    result = subprocess.run([sys.executable, "-m", "coral_mfg", "doctor"], cwd=ROOT,
                            env=_env(fake_libedgetpu, tmp_path, FAKE_EDGETPU_MODE=mode),
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    probe = next(x for x in result.stdout.splitlines() if "Edge TPU probe: " in x)
    assert probe.startswith("[ok ]" if ok else "[-- ]") and needle in probe
    # the version the library itself reports (edgetpu_version()), and the file loaded
    assert (f"Edge TPU runtime: libedgetpu.so.1 BuildLabel(fake-for-tests), RuntimeVersion(14) "
            f"({fake_libedgetpu / 'libedgetpu.so.1'})") in result.stdout
    verdict = "verdict: ready on Edge TPU" if ok else "verdict: ready on CPU"
    assert verdict in result.stdout


def test_pycoral_when_importable_only_lists_devices(fake_libedgetpu: Path,
                                                    tmp_path: Path) -> None:
    """Google's pycoral found: doctor lists its devices; it never opens models, and the
    runtime's version comes from the library itself, not from pycoral."""
    pkg = tmp_path / "site" / "pycoral" / "utils"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "edgetpu.py").write_text(
        "def list_edge_tpus():\n    return [{'type': 'usb', 'path': '/sys/bus/usb/devices/2-1'}]\n"
        "def get_runtime_version():\n    return 'BuildLabel(pycoral-says), RuntimeVersion(14)'\n"
        "def make_interpreter(*a, **k):\n    raise AssertionError('pycoral opened a model')\n")
    env = _env(fake_libedgetpu, tmp_path, FAKE_EDGETPU_MODE="crash",
               PYTHONPATH=str(tmp_path / "site"))
    result = _run(env, "--no-realtime", "--max_frames", "3")
    assert result.returncode == 0, result.stderr  # auto went on on the CPU, not exit 2
    assert "pycoral opened a model" not in result.stderr
    note = next(line for line in result.stderr.splitlines() if "Edge TPU not used: " in line)
    assert "libedgetpu.so.1 BuildLabel(fake-for-tests), RuntimeVersion(14)" in note
    assert "pycoral-says" not in note
    doctor = subprocess.run([sys.executable, "-m", "coral_mfg", "doctor"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180, check=False)
    assert "pycoral: importable; sees 1 Edge TPU(s)" in doctor.stdout


# --- messages ---------------------------------------------------------------------------------


def _start_error(kind: str, message: str, stage: str = "building the classifier interpreter"
                 ) -> ProcessStartError:
    return ProcessStartError(message, kind=kind, stage=stage)


@pytest.mark.parametrize(
    ("error", "needles"),
    [
        pytest.param(
            _start_error("error", "Failed to prepare for TPU. Package requires runtime version "
                         "(15), which is newer than this runtime version (14)."),
            ["compiled for Edge TPU runtime version 15", "upgrade libedgetpu",
             "recompile the model"], id="newer-package"),
        pytest.param(_start_error("no_runtime", "libedgetpu.so.1: cannot open shared object"),
                     ["libedgetpu.so.1 is not installed", "--device cpu"], id="no-runtime"),
        pytest.param(_start_error("crash", "killed by SIGABRT while running the detector once"),
                     ["SIGABRT", "libedgetpu", "TensorFlow", "--device cpu"], id="abort"),
        pytest.param(_start_error("model", "/m/x_edgetpu.tflite failed to load (bad)"),
                     ["/m/x_edgetpu.tflite failed to load"], id="model"),
    ],
)
def test_edgetpu_failures_in_one_line(error: ProcessStartError, needles: list[str]) -> None:
    message = edgetpu_failure(error, None, runtime_backend())
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_an_attached_tpu_that_cannot_be_opened_is_not_called_missing() -> None:
    found = [Coral("usb", "2-1", "18d1:9302", Path("/dev/bus/usb/002/003"))]
    message = no_device_message("usb", "", found)
    assert message.startswith("an Edge TPU is attached (usb 2-1) but could not be opened at 'usb'")
    for needle in ("plugdev", "udev", "apex", "one process at a time"):
        assert needle in message
    assert no_device_message(None, "", []).startswith("no Edge TPU found:")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [(RuntimeError(""), "RuntimeError"), (ValueError("a\n\nb\na"), "a; b"),
     (OSError("  only  "), "only")],
    ids=["empty", "repeated-lines", "spaces"],
)
def test_runtime_messages_become_one_line(exc: BaseException, expected: str) -> None:
    assert _message(exc) == expected


# --- supervised processes: real signals from outside ------------------------------------------


@pytest.fixture
def looping_app(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    events = tmp_path / "events.jsonl"
    app = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop",
         "--inference_timeout", "2", "--events", str(events)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield app, events
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate(timeout=30)


def _frames(events: Path, stream: str) -> int:
    return sum(1 for e in jsonl(events) if e["type"] == "frame" and e["stream"] == stream)


def _both_streams_move(events: Path) -> None:
    before = {s: _frames(events, s) for s in ("worker_safety", "visual_inspection")}
    wait_for(lambda: all(_frames(events, s) >= before[s] + 5 for s in before),
          what="both streams to produce frames")


def _kinds(events: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in jsonl(events) if e["type"] == kind]


def _running(app: subprocess.Popen[str], events: Path) -> list[int]:
    """Once both CPU processes are up and both streams produce frames: the process pids."""
    wait_for(lambda: len(_processes(app.pid)) == 2, what="two CPU processes")
    _both_streams_move(events)
    return _processes(app.pid)


@pytest.mark.slow
def test_crashed_killed_and_hung_workers_are_replaced(
    looping_app: tuple[subprocess.Popen[str], Path]
) -> None:
    app, events = looping_app
    _running(app, events)
    for n, (sig, reason) in enumerate(
        [(signal.SIGSEGV, "killed by SIGSEGV"), (signal.SIGKILL, "killed by SIGKILL"),
         (signal.SIGSTOP, "(hung)")], start=1):
        victim = _processes(app.pid)[0]
        os.kill(victim, sig)

        def lost_n(n: int = n) -> list[dict[str, Any]]:
            found = _kinds(events, "accelerator_lost")
            return found if len(found) >= n else []

        def restored_n(n: int = n) -> bool:
            return len(_kinds(events, "accelerator_restored")) >= n

        def gone(pid: int = victim) -> bool:
            return not _alive(pid)

        lost = wait_for(lost_n, what=f"loss {n}")
        assert reason in lost[n - 1]["reason"] and lost[n - 1]["device"] == "cpu"
        wait_for(restored_n, what=f"restore {n}")
        wait_for(gone, what="the old process to be gone")
        wait_for(lambda: len(_processes(app.pid)) == 2, what="two processes again")
        _both_streams_move(events)
    processes = _processes(app.pid)
    app.send_signal(signal.SIGTERM)
    _, stderr = app.communicate(timeout=30)
    assert app.returncode == 0, stderr
    summary = jsonl(events)[-1]
    assert summary["type"] == "summary"
    assert summary["accelerator"]["lost"] == 3 and summary["accelerator"]["restored"] == 3
    lost_frames = sum(summary["errors"].values())
    assert lost_frames == summary["accelerator"]["failed_frames"] >= 1  # counted, not silent
    wait_for(lambda: not any(_alive(p) for p in processes), timeout=10, what="no orphan process")


def test_stop_is_quick_and_leaves_no_worker_even_when_one_hangs(
    looping_app: tuple[subprocess.Popen[str], Path]
) -> None:
    app, events = looping_app
    processes = _running(app, events)
    os.kill(processes[0], signal.SIGSTOP)
    sent = time.monotonic()
    app.send_signal(signal.SIGTERM)
    _, stderr = app.communicate(timeout=60)
    assert app.returncode == 0, stderr
    # A stop that waited on the hung process would never end; the stop's own deadlines
    # end it within 2 s on a quiet machine (docs), far inside this generous bound.
    assert time.monotonic() - sent < 15.0
    assert jsonl(events)[-1]["type"] == "summary"
    wait_for(lambda: not any(_alive(p) for p in processes), timeout=10, what="no orphan process")


def test_workers_die_with_a_killed_application(
    looping_app: tuple[subprocess.Popen[str], Path]
) -> None:
    app, _ = looping_app
    processes = wait_for(lambda: len(_processes(app.pid)) == 2 and _processes(app.pid),
                    what="two CPU processes")
    app.kill()  # SIGKILL: no cleanup code runs in the application
    app.communicate(timeout=30)
    wait_for(lambda: not any(_alive(p) for p in processes), timeout=10,
          what="the processes to notice their parent is gone")


@pytest.mark.slow
def test_failing_edgetpu_falls_back_to_the_cpu_and_comes_back(
    fake_libedgetpu: Path, tmp_path: Path
) -> None:
    mode = tmp_path / "mode"
    mode.write_text("ok")
    events = tmp_path / "events.jsonl"
    app = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--loop", "--inference_timeout", "2",
         "--edgetpu_retry_seconds", "2", "--events", str(events)],
        cwd=ROOT, env=_env(fake_libedgetpu, tmp_path, FAKE_EDGETPU_MODE_FILE=str(mode)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(e.get("device") == "edgetpu" for e in _kinds(events, "frame")),
              what="frames on the Edge TPU")
        mode.write_text("abort:1")  # the device now aborts the process at every invoke
        lost = wait_for(lambda: _kinds(events, "accelerator_lost"), what="the Edge TPU lost")
        assert lost[0]["device"] == "edgetpu" and "SIGABRT" in lost[0]["reason"]
        fallback = wait_for(lambda: _kinds(events, "accelerator_fallback"), what="the fallback")
        assert fallback[0]["device"] == "cpu"
        at_fallback = len(jsonl(events))
        wait_for(lambda: sum(1 for e in jsonl(events)[at_fallback:]
                          if e["type"] == "frame" and e["device"] == "cpu") >= 10,
              what="frames on the CPU")
        mode.write_text("ok")  # repaired: the next try finds it working
        back = wait_for(lambda: [e for e in _kinds(events, "accelerator_restored")
                              if e.get("from") == "cpu"], what="the return to the Edge TPU")
        assert back[0]["device"] == "edgetpu"
        at_return = len(jsonl(events))
        wait_for(lambda: sum(1 for e in jsonl(events)[at_return:]
                          if e["type"] == "frame" and e["device"] == "edgetpu") >= 10,
              what="frames on the Edge TPU again")
    finally:
        app.send_signal(signal.SIGTERM)
        _, stderr = app.communicate(timeout=30)
    assert app.returncode == 0, stderr
    summary = jsonl(events)[-1]
    assert summary["accelerator"]["fallback"] == 1 and summary["accelerator"]["lost"] >= 1
    assert "Traceback" not in stderr
