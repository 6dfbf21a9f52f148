"""``coral-mfg doctor``: what this machine has, and whether the app can run on it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coral_mfg.assets import Manifest, app_home, load_manifest, usable_pairs, verify
from coral_mfg.capture import probe_source
from coral_mfg.errors import DeviceError, UserError
from coral_mfg.files import writable_folder
from coral_mfg.inference import runtime
from coral_mfg.inference.startup import probe_edgetpu
from coral_mfg.results import STREAMS
from coral_mfg.settings import Settings


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
    """Found without loading it: loading native code happens only in worker processes."""
    found = runtime.library_path(runtime.edgetpu_library()) is not None
    detail = runtime.edgetpu_version() if found else f"{runtime.edgetpu_library()} not found"
    return Check("Edge TPU runtime", found, detail, False)


def _tpu_devices_check() -> Check:
    found = runtime.list_edgetpus()
    if not found:
        detail = "none (no USB 1a6e:089a/18d1:9302, no /dev/apex_*)"
        return Check("Edge TPU devices", False, detail, False)
    return Check(
        "Edge TPU devices",
        True,
        "; ".join(f"{t.kind} {t.path} {t.note}".strip() for t in found),
        False,
    )


def _probe_check(settings: Settings | None) -> Check:
    """The run's models on the Edge TPU, in a worker process: the only true test."""
    if settings is None:
        return Check("Edge TPU probe", False, "skipped: the settings are not valid", False)
    if settings.models.device == "cpu":
        return Check("Edge TPU probe", False, "skipped: --device cpu", False)
    try:
        ok, detail = probe_edgetpu(settings.models)
    except UserError as exc:
        return Check("Edge TPU probe", False, str(exc), False)
    return Check("Edge TPU probe", ok, detail, False)


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


def _settings_checks(settings: Settings | UserError) -> list[Check]:
    """The run these flags describe: its config file, its inputs, its output folders."""
    if isinstance(settings, UserError):
        return [Check("config", False, str(settings))]
    where = str(settings.config) if settings.config else "built-in defaults"
    checks = [Check("config", True, f"{where}: valid")]
    for stream in STREAMS:
        checks.append(_input_check(settings, stream))
    checks.extend(_folder_check(path, probe) for _, path, probe in settings.written())
    return checks


def _input_check(settings: Settings, stream: str) -> Check:
    config = settings.stream(stream)
    try:
        cap, first = probe_source(config.spec, *settings.out_size, stream)
    except UserError as exc:
        return Check(f"input {stream}", False, str(exc))
    cap.release()
    size = f"{first.size[0]}x{first.size[1]}" if first is not None else "?"
    return Check(f"input {stream}", True, f"{config.spec} ({size})")


def _folder_check(path: Path, probe: Path) -> Check:
    problem = writable_folder(probe)
    return Check(f"output {path.name}", problem is None, problem or f"{probe.parent} writable")


def _settings(args: argparse.Namespace) -> Settings | UserError:
    from coral_mfg.cli import resolve_settings

    try:
        return resolve_settings(args)
    except UserError as exc:
        return exc


def run_doctor(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    manifest = load_manifest()
    home = app_home()
    settings = _settings(args)
    valid = settings if isinstance(settings, Settings) else None
    checks = [
        Check("python", True, sys.version.split()[0]),
        _runtime_check(),
        _numpy_check(),
        _opencv_check(),
        _pycoral_check(),
        _libedgetpu_check(),
        _tpu_devices_check(),
        _probe_check(valid),
        _display_check(),
        *_asset_checks(manifest, home),
        *_settings_checks(settings),
    ]
    tpu = next(c for c in checks if c.name == "Edge TPU probe").ok
    pairs = usable_pairs(manifest, home, edgetpu=tpu)
    checks.append(
        Check(
            "models",
            bool(pairs),
            f"{pairs[0][1]} + {pairs[0][2]}" if pairs else "no detector+classifier pair "
            "can run: run 'coral-mfg fetch-assets'",
        )
    )
    out(f"home: {home}")
    for c in checks:
        mark = "ok " if c.ok else ("-- " if not c.required else "ERR")
        out(f"[{mark}] {c.name}: {c.detail}")
    failed = [c.name for c in checks if c.required and not c.ok]
    if failed:
        out(f"verdict: cannot run ({', '.join(failed)})")
        return 1
    device = "Edge TPU" if tpu else "CPU"
    window = any(c.ok for c in checks if c.name == "display")
    out(f"verdict: ready on {device}, {'window or headless' if window else 'headless only'}")
    return 0
