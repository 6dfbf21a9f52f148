"""``coral-mfg doctor``: what this machine has, and whether the app can run on it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coral_mfg.capture.sources import probe_source
from coral_mfg.config.assets import Manifest, app_home, load_manifest, usable_pairs, verify
from coral_mfg.config.cameras import CameraConfig
from coral_mfg.config.settings import Settings
from coral_mfg.config.validators import redact_url
from coral_mfg.core.errors import DeviceError, UserError
from coral_mfg.inference import device_lock, discovery, runtime, setup_guide
from coral_mfg.inference.startup import probe_edgetpu
from coral_mfg.runtime.builder import check_models


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report; only required checks decide the verdict."""

    name: str
    ok: bool
    detail: str
    required: bool = True


def _runtime_check() -> Check:
    try:
        backend = runtime.runtime_backend()
    except DeviceError as exc:
        return Check("TFLite runtime", False, str(exc))
    return Check("TFLite runtime", True, f"{backend.name} {backend.version}")


def _numpy_check() -> Check:
    import numpy

    return Check("NumPy", True, numpy.__version__)


def _opencv_check() -> Check:
    import cv2

    info = cv2.getBuildInformation()
    ffmpeg = any("FFMPEG:" in line and "YES" in line for line in info.splitlines())
    return Check("OpenCV", ffmpeg, f"{cv2.__version__}, FFmpeg {'yes' if ffmpeg else 'NO'}")


def _pycoral_check() -> Check:
    mod = runtime.google_pycoral()
    if mod is None:
        return Check("pycoral", True, "not installed (optional; used only to list devices)", False)
    tpus = mod.list_edge_tpus()
    return Check("pycoral", True, f"importable; sees {len(tpus)} Edge TPU(s): {tpus}", False)


def _libedgetpu_check() -> Check:
    """libedgetpu's own version (``edgetpu_version()``), asked in a child process."""
    report = runtime.describe_library()
    return Check("Edge TPU runtime", report.ok, report.detail, False)


def _coral_checks() -> list[Check]:
    """Every Coral sysfs shows, with what stops it opening and who holds it; no device is
    opened (a USB Coral's port is reset by whoever opens it)."""
    found = discovery.survey()
    checks: list[Check] = []
    if not found:
        checks.append(Check("Edge TPU devices", False,
                            f"none found (no USB 1a6e:089a/18d1:9302, no PCIe 1ac1:089a): "
                            f"{discovery.nothing_found_hint()}", False))
    else:
        names = [discovery.name_of(found, c) for c in found]
        listed = ", ".join(f"{n} ({c.sysname})" for n, c in zip(names, found, strict=True))
        checks.append(Check("Edge TPU devices", True, f"{len(found)} found: {listed}", False))
        for name, coral in zip(names, found, strict=True):
            holder = device_lock.holder(coral.key)
            detail = coral.describe()
            if holder is not None:
                detail = f"in use by {holder.describe()} (not touched); {detail}"
            elif coral.holders:
                detail += f"; held open by {', '.join(coral.holders)}"
            ok = coral.usable and holder is None and not coral.holders
            checks.append(Check(f"Edge TPU {name}", ok, detail, False))
    anyone = device_lock.holder(device_lock.ANY_DEVICE)
    if anyone is not None:
        checks.append(Check("Edge TPU", False, f"in use by {anyone.describe()}", False))
    return checks


def _probe_check(settings: Settings | None) -> tuple[Check, bool]:
    """The run's models on the Edge TPU, in an inference process: the only true test.

    Also says whether the trouble is the runtime itself (then the set-up steps help).
    """
    if settings is None:
        return Check("Edge TPU probe", False, "skipped: the settings are not valid", False), False
    if settings.models.device == "cpu":
        return Check("Edge TPU probe", False, "skipped: --device cpu", False), False
    try:
        probe = probe_edgetpu(settings.models)
    except UserError as exc:
        return Check("Edge TPU probe", False, str(exc), False), False
    return Check("Edge TPU probe", probe.ok, probe.detail, False), probe.runtime_fault


def _display_check() -> Check:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return Check("display", False, "no DISPLAY: only --headless runs work", False)
    try:
        import glfw

        if not glfw.init():
            return Check("display", False, "glfw cannot open the display", False)
        raw = glfw.get_version_string()
        version = raw.decode() if isinstance(raw, bytes) else str(raw)
        glfw.terminate()
    except Exception as exc:
        return Check("display", False, f"glfw unavailable ({exc})", False)
    return Check("display", True, f"{os.environ.get('DISPLAY', '')} via glfw {version}", False)


def _asset_checks(manifest: Manifest, home: Path) -> list[Check]:
    checks = []
    for asset in manifest.assets:
        path = home / asset.subdir / asset.name
        if not path.exists():
            checks.append(Check(f"asset {asset.name}", False, "missing", False))
        elif verify(asset, path):
            checks.append(Check(f"asset {asset.name}", True, "present, verified", False))
        else:
            detail = "present but FAILS verification: run 'coral-mfg fetch-assets'"
            checks.append(Check(f"asset {asset.name}", False, detail, False))
    return checks


def _models_check(settings: Settings | UserError, manifest: Manifest, home: Path,
                  tpu: bool) -> Check:
    """The run's own models, checked as the run checks them (labels, passing grades,
    anomaly models): "ready" only for a run that would start."""
    if isinstance(settings, UserError):
        pairs = usable_pairs(manifest, home, edgetpu=tpu)
        if not pairs:
            return Check("models", False, "no detector+classifier pair can run: run "
                         "'coral-mfg fetch-assets'")
        return Check("models", True, f"{pairs[0][1]} + {pairs[0][2]}")
    try:
        return Check("models", True, check_models(settings))
    except UserError as exc:
        return Check("models", False, str(exc))


def _settings_checks(settings: Settings | UserError) -> list[Check]:
    """The run these flags describe: its config file, its inputs, its output folders."""
    if isinstance(settings, UserError):
        return [Check("config", False, str(settings))]
    where = str(settings.config) if settings.config else "built-in defaults"
    checks = [Check("config", True, f"{where}: valid")]
    for camera in settings.camera_list():
        checks.append(_input_check(settings, camera))
    checks.extend(Check(f"output {path.name}", problem is None,
                        problem or f"{probe.parent} writable")
                  for _, path, probe, problem in settings.written_problems())
    return checks


def _input_check(settings: Settings, camera: CameraConfig) -> Check:
    config = settings.stream(camera)
    name = f"input {camera.name}"
    try:
        cap, first = probe_source(config.spec, *settings.out_size, camera.name)
    except UserError as exc:
        return Check(name, False, str(exc))
    cap.release()
    size = f"{first.size[0]}x{first.size[1]}" if first is not None else "?"
    return Check(name, True, f"{redact_url(config.spec)} ({size})")


def _settings(args: argparse.Namespace) -> Settings | UserError:
    from coral_mfg.config.flags import resolve_settings

    try:
        return resolve_settings(args)
    except UserError as exc:
        return exc


def run_doctor(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    manifest = load_manifest()
    home = app_home()
    settings = _settings(args)
    valid = settings if isinstance(settings, Settings) else None
    library = _libedgetpu_check()
    probe, runtime_fault = _probe_check(valid)
    checks = [
        Check("python", True, sys.version.split()[0]),
        _runtime_check(),
        _numpy_check(),
        _opencv_check(),
        _pycoral_check(),
        library,
        *_coral_checks(),
        probe,
        _display_check(),
        *_asset_checks(manifest, home),
        *_settings_checks(settings),
    ]
    tpu = next(c for c in checks if c.name == "Edge TPU probe").ok
    checks.append(_models_check(settings, manifest, home, tpu))
    out(f"home: {home}")
    for c in checks:
        mark = "ok " if c.ok else ("-- " if not c.required else "ERR")
        out(f"[{mark}] {c.name}: {c.detail}")
    if not library.ok or runtime_fault:
        litert = next((c.detail for c in checks if c.name == "TFLite runtime" and c.ok),
                      "ai_edge_litert")
        for line in setup_guide.steps(discovery.survey(), litert):
            out(line)
    failed = [c.name for c in checks if c.required and not c.ok]
    if failed:
        out(f"verdict: cannot run ({', '.join(failed)})")
        return 1
    device = "Edge TPU" if tpu else "CPU"
    window = any(c.ok for c in checks if c.name == "display")
    out(f"verdict: ready on {device}, {'window or headless' if window else 'headless only'}")
    return 0
