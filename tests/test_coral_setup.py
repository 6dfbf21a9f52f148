"""First contact with a Coral: each set-up fault named in one line, the device never disturbed.

No Coral here: the faults are built as fake sysfs and /dev trees (the roots are
settable), permissions are real (the checks run as an unprivileged user when
the tests run as root), the device lock is held by a real second process, and
libedgetpu is the stand-in from tests/fake_edgetpu/ (a slow open, replayed or
wrong answers, a missing dependency).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral_mfg.inference import device_lock, setup_guide
from coral_mfg.inference.discovery import Coral, Roots, survey
from coral_mfg.inference.errors import ProcessStartError
from coral_mfg.inference.protocol import Step
from coral_mfg.inference.runtime import edgetpu_failure, runtime_backend
from tests.conftest import ROOT, jsonl, wait_for

UNPRIVILEGED = "nobody"


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every user may read: the fake trees, seen by an unprivileged process."""
    folder = Path(tempfile.mkdtemp(prefix="coral-mfg-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _usb(root: Path, name: str, ids: tuple[str, str], bus: int, dev: int, *,
         mode: int = 0o660) -> Path:
    folder = root / "sys" / "bus" / "usb" / "devices" / name
    folder.mkdir(parents=True)
    for key, value in (("idVendor", ids[0]), ("idProduct", ids[1]), ("busnum", str(bus)),
                       ("devnum", str(dev)), ("speed", "5000")):
        (folder / key).write_text(value + "\n")
    node = root / "dev" / "bus" / "usb" / f"{bus:03d}" / f"{dev:03d}"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.touch()
    node.chmod(mode)
    return node


def _pci(root: Path, address: str, *, driver: bool, apex_mode: int | None) -> None:
    folder = root / "sys" / "bus" / "pci" / "devices" / address
    folder.mkdir(parents=True)
    (folder / "vendor").write_text("0x1ac1\n")
    (folder / "device").write_text("0x089a\n")
    if driver:
        drivers = root / "sys" / "bus" / "pci" / "drivers" / "apex"
        drivers.mkdir(parents=True, exist_ok=True)
        (folder / "driver").symlink_to(drivers)
        (folder / "apex" / "apex_0").mkdir(parents=True)
    if apex_mode is not None:
        node = root / "dev" / "apex_0"
        node.parent.mkdir(parents=True, exist_ok=True)
        node.touch()
        node.chmod(apex_mode)


def _tree_dirs(root: Path) -> None:
    for sub in ("sys/bus/usb/devices", "sys/bus/pci/devices", "dev", "locks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def _env(root: Path, lib: Path | None, **extra: str) -> dict[str, str]:
    _tree_dirs(root)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env.update(CORAL_MFG_SYSFS=str(root / "sys"), CORAL_MFG_DEV=str(root / "dev"),
               CORAL_MFG_LOCK_DIR=str(root / "locks"), FAKE_EDGETPU_LOG=str(root / "fake.log"))
    if lib is not None:
        env["LD_LIBRARY_PATH"] = str(lib)
        env["FAKE_EDGETPU_OUTPUT"] = str(lib / "right_answer.bin")
        env.setdefault("FAKE_EDGETPU_MODE", "ok")
    env.update(extra)
    return env


def _coral_mfg(env: dict[str, str], *args: str,
               timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coral_mfg", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


#: coral-mfg as an unprivileged user, for the permission checks: root may open any node.
#: The interpreter lives where that user may not read (root's home), so the process starts
#: as root and runs the command once unheard (it imports every module it needs; the
#: stand-in's log is off), then gives up root for good and runs it again.
_DROP_AND_RUN = f"""
import contextlib, io, os, pwd, sys
from coral_mfg.commands.cli import main
log = os.environ.pop("FAKE_EDGETPU_LOG", None)
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    main(sys.argv[1:])
if log:
    os.environ["FAKE_EDGETPU_LOG"] = log
user = pwd.getpwnam({UNPRIVILEGED!r})
os.setgroups([])
os.setgid(user.pw_gid)
os.setuid(user.pw_uid)
assert os.geteuid() == user.pw_uid
sys.exit(main(sys.argv[1:]))
"""


def _coral_mfg_unprivileged(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """As root: as an unprivileged user; as anyone else: as ourselves (the nodes' modes then
    stop us as they stop anyone who is not root)."""
    if os.geteuid() != 0:
        return _coral_mfg(env, *args)
    return subprocess.run([sys.executable, "-c", _DROP_AND_RUN, *args], cwd=ROOT,
                          env={**env, "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True,
                          text=True, timeout=180, check=False)


def _line(out: str, start: str) -> str:
    return next(x for x in out.splitlines() if x.startswith(start))


def _fake_log(root: Path) -> list[str]:
    path = root / "fake.log"
    return path.read_text().splitlines() if path.exists() else []


# --- discovery: one line per fault, with its fix; the device never opened -------------------


def test_usb_permission_both_ids_named_with_the_fix(fake_libedgetpu: Path,
                                                    shared_tmp: Path) -> None:
    _usb(shared_tmp, "1-1", ("1a6e", "089a"), 1, 5)  # before its firmware is loaded
    _usb(shared_tmp, "2-1", ("18d1", "9302"), 2, 3)  # after
    result = _coral_mfg_unprivileged(_env(shared_tmp, fake_libedgetpu), "doctor")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    first = _line(out, "[-- ] Edge TPU usb:0: ")
    second = _line(out, "[-- ] Edge TPU usb:1: ")
    for line, node in ((first, "dev/bus/usb/001/005"), (second, "dev/bus/usb/002/003")):
        assert f"{node} is not readable and writable by" in line
        for fix in ("udev rules for 1a6e:089a and 18d1:9302", "plugdev", "re-plug"):
            assert fix in line
    assert "USB 1-1 (1a6e:089a)" in first and "firmware not loaded yet" in first
    assert "USB 2-1 (18d1:9302)" in second
    probe = _line(out, "[-- ] Edge TPU probe: ")
    assert probe.startswith("[-- ] Edge TPU probe: Edge TPU usb:0 (USB 1-1, 1a6e:089a): ")
    assert "plugdev" in probe and "TensorFlow" not in probe
    assert _fake_log(shared_tmp) == []  # libedgetpu never asked to open it


def test_pcie_without_its_driver(fake_libedgetpu: Path, shared_tmp: Path) -> None:
    _pci(shared_tmp, "0000:01:00.0", driver=False, apex_mode=None)
    result = _coral_mfg(_env(shared_tmp, fake_libedgetpu), "doctor")
    line = _line(result.stdout, "[-- ] Edge TPU pci:0: ")
    assert "PCIe 0000:01:00.0 (1ac1:089a)" in line
    assert "no driver is bound to it" in line and "gasket-dkms" in line and "reboot" in line
    probe = _line(result.stdout, "[-- ] Edge TPU probe: ")
    assert "no driver is bound" in probe and "TensorFlow" not in probe
    assert _fake_log(shared_tmp) == []


def test_pcie_permission_on_apex_node(fake_libedgetpu: Path, shared_tmp: Path) -> None:
    _pci(shared_tmp, "0000:01:00.0", driver=True, apex_mode=0o660)
    result = _coral_mfg_unprivileged(_env(shared_tmp, fake_libedgetpu), "doctor")
    assert result.returncode == 0, result.stderr
    line = _line(result.stdout, "[-- ] Edge TPU pci:0: ")
    assert "driver apex" in line
    assert "dev/apex_0 is not readable and writable by" in line
    assert 'SUBSYSTEM=="apex", MODE="0660", GROUP="apex"' in line and "usermod -aG apex" in line
    assert _fake_log(shared_tmp) == []


def test_pcie_and_usb_notes_for_a_raspberry_pi_5(tmp_path: Path) -> None:
    _pci(tmp_path, "0001:01:00.0", driver=False, apex_mode=None)
    model = tmp_path / "sys" / "firmware" / "devicetree" / "base" / "model"
    model.parent.mkdir(parents=True)
    model.write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    roots = Roots(tmp_path / "sys", tmp_path / "dev")
    (found,) = survey(roots, page_size=16384)
    assert "kernel=kernel8.img" in found.problem  # the 16K-page kernel: gasket needs 4K
    (again,) = survey(roots, page_size=4096)
    assert "kernel8" not in again.problem
    steps = setup_guide.steps([found], "ai_edge_litert 2.3.0", roots)
    assert steps[0].startswith("Set up a Coral on this machine (Raspberry Pi 5")
    text = "\n".join(steps)
    for needle in ("dtparam=pciex1", "pciex1-compat-pi5", "gasket-dkms", "apex",
                   "coral-mfg doctor"):
        assert needle in text


def test_a_process_holding_the_node_is_named(shared_tmp: Path) -> None:
    node = _usb(shared_tmp, "2-1", ("18d1", "9302"), 2, 3, mode=0o666)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1]); "
                               "print('open', flush=True); time.sleep(120)", str(node)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        (found,) = survey(Roots(shared_tmp / "sys", shared_tmp / "dev"))
        assert any(f"(pid {holder.pid})" in h for h in found.holders)
    finally:
        holder.kill()
        holder.wait(30)


# --- stages: a slow open is the device's, never TensorFlow's -------------------------------


def test_stage_open_that_takes_30s_names_the_device_not_tensorflow(
    fake_libedgetpu: Path, shared_tmp: Path
) -> None:
    """libedgetpu retries a USB Coral it may not open for 25 s: the verdict waits for it and
    names the device; libedgetpu's own reason goes to the debug log."""
    _usb(shared_tmp, "2-1", ("18d1", "9302"), 2, 3, mode=0o666)
    env = _env(shared_tmp, fake_libedgetpu, FAKE_EDGETPU_MODE="openhang:30")
    result = _coral_mfg(env, "--headless", "--device", "edgetpu", "--inference_timeout", "1",
                        "--log_level", "debug")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("coral-mfg: error: an Edge TPU is attached (usb 2-1) but could not "
                           "be opened")
    assert "TensorFlow" not in last and "--device cpu" in last
    assert last.endswith("[libedgetpu.so.1 BuildLabel(fake-for-tests), RuntimeVersion(14)]")
    assert "LIBUSB_ERROR_ACCESS" in result.stderr  # raised verbosity, forwarded at debug
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("kind", "step", "needles", "absent"),
    [
        pytest.param("hang", Step.OPEN, ["the Edge TPU usb:0 did not open", "re-plug",
                                         "--log_level debug"], ["TensorFlow"], id="open-hang"),
        pytest.param("crash", Step.OPEN, ["the Edge TPU usb:0 did not open"], ["TensorFlow"],
                     id="open-crash"),
        pytest.param("crash", Step.RUNTIME, ["failed while loading", "reinstall"],
                     ["TensorFlow version"], id="load-crash"),
        pytest.param("crash", Step.BUILD, ["another TensorFlow version", "BuildLabel(x)"], [],
                     id="build-crash"),
        pytest.param("hang", Step.INVOKE, ["another TensorFlow version"], [], id="invoke-hang"),
    ],
)
def test_stage_decides_the_story(kind: str, step: str, needles: list[str],
                                 absent: list[str]) -> None:
    found = [Coral("usb", "2-1", "18d1:9302", Path("/dev/bus/usb/002/003"))]
    exc = ProcessStartError("no answer within 45 s (hung)", kind=kind, stage="doing it",
                           step=step, runtime="libedgetpu.so.1 BuildLabel(x), RuntimeVersion(14)")
    message = edgetpu_failure(exc, None, runtime_backend(), found)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    for word in absent:
        assert word not in message


def test_stage_open_with_a_permission_problem_names_the_fix() -> None:
    problem = "/dev/bus/usb/002/003 is not readable and writable by bob (...): add bob to plugdev"
    found = [Coral("usb", "2-1", "18d1:9302", Path("/dev/bus/usb/002/003"), problem)]
    exc = ProcessStartError("no answer within 45 s while opening (hung)", kind="hang",
                           stage="opening the Edge TPU usb:0", step=Step.OPEN)
    message = edgetpu_failure(exc, "usb", runtime_backend(), found)
    assert message.startswith("the Edge TPU usb:0 did not open")
    assert problem in message and "TensorFlow" not in message


# --- one process per device ------------------------------------------------------------------


def test_in_use_lock_held_by_a_second_process(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORAL_MFG_LOCK_DIR", str(tmp_path))
    code = ("import sys, time; from coral_mfg.inference import device_lock; "
            "device_lock.claim('usb-2-1', 4242, 'usb:0'); print('held', flush=True); "
            "time.sleep(120)")
    other = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "CORAL_MFG_LOCK_DIR": str(tmp_path)})
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        holder = device_lock.holder("usb-2-1")
        assert holder is not None and holder.describe() == "coral-mfg (pid 4242)"
        with pytest.raises(device_lock.InUseError, match=r"coral-mfg \(pid 4242\)"):
            device_lock.claim("usb-2-1", os.getpid(), "usb:0")
        assert device_lock.holder("usb-2-0") is None
    finally:
        other.kill()
        other.wait(30)
    wait_for(lambda: device_lock.holder("usb-2-1") is None, "the lock to go with its holder")


def test_in_use_doctor_and_a_second_run_do_not_touch_the_device(
    fake_libedgetpu: Path, shared_tmp: Path
) -> None:
    _usb(shared_tmp, "2-1", ("18d1", "9302"), 2, 3, mode=0o666)
    env = _env(shared_tmp, fake_libedgetpu)
    events = shared_tmp / "events.jsonl"
    station = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--loop", "--events", str(events)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def on_the_edgetpu() -> bool:
        return any(e.get("device") == "edgetpu" for e in jsonl(events))

    try:
        wait_for(on_the_edgetpu, "the station to run on the Edge TPU")
        opened = [line for line in _fake_log(shared_tmp) if " create" in line]
        assert len(opened) == 1
        doctor = _coral_mfg(env, "doctor")
        busy = f"Edge TPU usb:0 is in use by coral-mfg (pid {station.pid})"
        assert busy in _line(doctor.stdout, "[-- ] Edge TPU probe: ")
        device = _line(doctor.stdout, "[-- ] Edge TPU usb:0: ")
        assert f"in use by coral-mfg (pid {station.pid}) (not touched)" in device
        second = _coral_mfg(env, "--headless", "--device", "edgetpu")
        assert second.returncode == 2
        assert busy in second.stderr.strip().splitlines()[-1]
        auto = _coral_mfg(env, "--headless", "--no-realtime", "--max_frames", "3")
        assert auto.returncode == 0, auto.stderr
        assert f"Edge TPU not used: {busy}" in auto.stderr
        # nobody but the station's process ever asked libedgetpu to open a device
        assert [line for line in _fake_log(shared_tmp) if " create" in line] == opened
        assert station.poll() is None
    finally:
        station.send_signal(signal.SIGTERM)
        _, stderr = station.communicate(timeout=30)
    assert station.returncode == 0, stderr


# --- the known answer -------------------------------------------------------------------------


def test_known_answer_agreement_is_reported(fake_libedgetpu: Path, shared_tmp: Path) -> None:
    result = _coral_mfg(_env(shared_tmp, fake_libedgetpu), "doctor")
    probe = _line(result.stdout, "[ok ] Edge TPU probe: ")
    assert "known-answer check passed (Edge TPU [0.996 0.000] vs CPU [0.996 0.000]" in probe


@pytest.mark.parametrize("answer", [b"\x00\xff", None], ids=["swapped", "zeros"])
def test_known_answer_mismatch_falls_back_or_exits_2(fake_libedgetpu: Path, shared_tmp: Path,
                                                     answer: bytes | None) -> None:
    wrong = shared_tmp / "wrong.bin"
    env = _env(shared_tmp, fake_libedgetpu)
    if answer is None:
        del env["FAKE_EDGETPU_OUTPUT"]  # the stand-in leaves its outputs at zero
    else:
        wrong.write_bytes(answer)
        env["FAKE_EDGETPU_OUTPUT"] = str(wrong)
    auto = _coral_mfg(env, "--headless", "--no-realtime", "--max_frames", "3")
    assert auto.returncode == 0, auto.stderr
    note = _line(auto.stderr.split("inference: ", 1)[1], "Edge TPU not used: ")
    assert note.startswith("Edge TPU not used: the Edge TPU gives wrong answers (known-answer "
                           "check failed: Edge TPU [")
    assert "vs CPU [0.996 0.000]" in note and "another TensorFlow version" in note
    assert "BuildLabel(fake-for-tests)" in note
    strict = _coral_mfg(env, "--headless", "--device", "edgetpu")
    assert strict.returncode == 2
    last = strict.stderr.strip().splitlines()[-1]
    assert last.startswith("coral-mfg: error: the Edge TPU gives wrong answers")
    assert "Traceback" not in strict.stderr


# --- load errors keep their cause -------------------------------------------------------------


def test_load_error_keeps_the_os_text(tmp_path: Path, shared_tmp: Path) -> None:
    """A libedgetpu whose own dependency is missing (as with no libusb): the loader's words
    and the fix, never just 'not installed'."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc
    dep = tmp_path / "dep"
    dep.mkdir()
    (dep / "dep.c").write_text("int coral_mfg_test_dep(void) { return 1; }\n")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(dep / "libcoralmfgtestdep.so.0"),
                    str(dep / "dep.c")], check=True)
    lib = tmp_path / "lib"
    lib.mkdir()
    src = ROOT / "tests" / "fake_edgetpu" / "fake_edgetpu.c"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib / "libedgetpu.so.1"), str(src),
                    "-Wl,--no-as-needed", f"-L{dep}", "-l:libcoralmfgtestdep.so.0"], check=True)
    env = _env(shared_tmp, lib)
    result = _coral_mfg(env, "--headless", "--device", "edgetpu")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert ("libcoralmfgtestdep.so.0: cannot open shared object file: No such file or "
            "directory") in last
    assert "install libcoralmfgtestdep.so.0, which libedgetpu needs" in last
    doctor = _coral_mfg(env, "doctor")
    line = _line(doctor.stdout, "[-- ] Edge TPU runtime: ")
    assert "libedgetpu.so.1 could not be loaded (libcoralmfgtestdep.so.0: cannot open" in line
    assert "Set up a Coral on this machine (" in doctor.stdout
