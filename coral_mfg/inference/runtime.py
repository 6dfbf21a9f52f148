"""Which device and which model builds a run uses, and what to say when the Edge TPU fails.

Nothing here loads native inference code: the ``libedgetpu`` delegate is only
ever loaded inside a worker process (see :mod:`coral_mfg.inference.worker`),
so a runtime that crashes cannot take the application with it. Google's
pycoral, when importable, is used only to list devices and name the runtime.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any

from coral_mfg.errors import DeviceError, ModelError
from coral_mfg.inference.client import WorkerStartError
from coral_mfg.inference.model_file import ModelInfo, inspect_model, twin_path

log = logging.getLogger(__name__)

#: USB ids of the Coral USB Accelerator before and after its firmware is loaded.
USB_IDS = {("1a6e", "089a"): "usb (firmware not yet loaded)", ("18d1", "9302"): "usb"}
_DEVICE_RE = re.compile(r"^(?:(usb|pci)(?::(\d+))?|:(\d+))$")


class Device(StrEnum):
    """Where inference runs; ``auto`` picks the Edge TPU when one answers."""

    AUTO = "auto"
    EDGETPU = "edgetpu"
    CPU = "cpu"


def edgetpu_library() -> str:
    """The Edge TPU runtime's shared library name on this OS."""
    return {
        "Linux": "libedgetpu.so.1",
        "Darwin": "libedgetpu.1.dylib",
        "Windows": "edgetpu.dll",
    }.get(platform.system(), "libedgetpu.so.1")


def parse_device_string(device: str | None) -> str | None:
    """Validate pycoral's device strings: ``usb``, ``usb:N``, ``pci``, ``pci:N``, ``:N``."""
    if device is None or device == "":
        return None
    if not _DEVICE_RE.match(device):
        raise DeviceError(
            f"Edge TPU device '{device}' is not valid; use usb, usb:N, pci, pci:N or :N"
        )
    return device


@dataclass(frozen=True)
class Backend:
    """The TFLite runtime package in use."""

    name: str
    version: str
    interpreter_module: ModuleType

    def interpreter(self, **kwargs: Any) -> Any:
        return self.interpreter_module.Interpreter(**kwargs)


def runtime_backend() -> Backend:
    """LiteRT first; ``tflite_runtime`` only when LiteRT is absent."""
    for package, module in (
        ("ai_edge_litert", "ai_edge_litert.interpreter"),
        ("tflite_runtime", "tflite_runtime.interpreter"),
    ):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        top = importlib.import_module(package)
        version = getattr(top, "__version__", None) or _dist_version(package)
        return Backend(package, version, mod)
    raise DeviceError(
        "no TensorFlow Lite runtime is installed; run 'pip install ai-edge-litert'"
    )


def _dist_version(package: str) -> str:
    from importlib import metadata

    for dist in (package.replace("_", "-"), package):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def google_pycoral() -> ModuleType | None:
    """Google's ``pycoral.utils.edgetpu``, or None (PyPI's ``pycoral`` is another project)."""
    try:
        mod = importlib.import_module("pycoral.utils.edgetpu")
    except ImportError:
        return None
    if not hasattr(mod, "make_interpreter") or not hasattr(mod, "list_edge_tpus"):
        return None
    return mod


@dataclass(frozen=True)
class EdgeTpuInfo:
    """An Edge TPU the operating system shows, found without loading its runtime."""

    kind: str  # "usb" or "pci"
    path: str
    note: str = ""


def list_edgetpus(
    usb_root: Path = Path("/sys/bus/usb/devices"), dev_root: Path = Path("/dev")
) -> list[EdgeTpuInfo]:
    """Edge TPUs visible to the OS, found without the runtime: USB by id, PCIe by node."""
    found: list[EdgeTpuInfo] = []
    if usb_root.is_dir():
        for dev in sorted(usb_root.iterdir()):
            try:
                ids = (
                    (dev / "idVendor").read_text().strip(),
                    (dev / "idProduct").read_text().strip(),
                )
            except OSError:
                continue
            if ids in USB_IDS:
                found.append(EdgeTpuInfo("usb", dev.name, f"{ids[0]}:{ids[1]} {USB_IDS[ids]}"))
    found.extend(EdgeTpuInfo("pci", str(p)) for p in sorted(dev_root.glob("apex_*")))
    return found


def no_device_message(
    device: str | None, detail: str = "", found: list[EdgeTpuInfo] | None = None
) -> str:
    """No Edge TPU answered: say whether one is attached but cannot be opened, or none is."""
    where = f" at '{device}'" if device else ""
    detail = "; ".join(line.strip() for line in detail.splitlines() if line.strip())
    extra = f" ({detail})" if detail else ""
    found = list_edgetpus() if found is None else found
    if found:
        seen = ", ".join(f"{t.kind} {t.path}" for t in found)
        return (
            f"an Edge TPU is attached ({seen}) but could not be opened{where}{extra}: add your "
            "user to the plugdev group (USB, with the udev rules of the libedgetpu package) or "
            "the apex group (PCIe), make sure no other process holds it (a USB Edge TPU opens "
            "in one process at a time), or run with --device cpu"
        )
    return (
        f"no Edge TPU found{where}{extra}: plug in the Coral accelerator "
        "(run 'coral-mfg doctor' to list devices) or run with --device cpu"
    )


def edgetpu_version() -> str:
    """Which libedgetpu is installed, as far as can be told without loading it."""
    if (mod := google_pycoral()) is not None and hasattr(mod, "get_runtime_version"):
        try:
            return f"libedgetpu {mod.get_runtime_version()}"
        except Exception:  # pycoral loads the runtime itself: it may fail too
            log.debug("pycoral could not tell the runtime version", exc_info=True)
    packages = _dpkg_versions("libedgetpu1-*")
    if packages:
        return "libedgetpu " + ", ".join(packages)
    path = library_path(edgetpu_library())
    return f"libedgetpu {path or edgetpu_library()} (version unknown: not installed as a package)"


def _dpkg_versions(pattern: str) -> list[str]:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${db:Status-Status} ${Package} ${Version}\n", pattern],
            capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [" ".join(line.split()[1:]) for line in out.stdout.splitlines()
            if line.startswith("installed ")]


def library_path(name: str) -> str | None:
    """Where the dynamic loader would find ``name`` (LD_LIBRARY_PATH first), without loading it."""
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib",
             "/usr/local/lib"]
    for folder in dirs:
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate.resolve())
    return None


def runtime_version(backend: Backend) -> str:
    """The inference runtime and the TensorFlow Lite it was built from, for messages."""
    if backend.name == "tflite_runtime":
        return f"tflite_runtime {backend.version} (TensorFlow {backend.version})"
    return f"{backend.name} {backend.version} (TensorFlow Lite >= 2.19)"


_PACKAGE_VERSION_RE = re.compile(r"Package requires runtime version \((\d+)\)")


def edgetpu_failure(exc: WorkerStartError, device: str | None, backend: Backend) -> str:
    """One line for an Edge TPU worker that could not start: the cause and the fix."""
    if exc.kind == "model":
        return str(exc)
    if exc.kind == "no_runtime":
        return (f"the Edge TPU runtime {edgetpu_library()} is not installed: install a "
                f"libedgetpu built for {runtime_version(backend)} (see 'Edge TPU' in the README), "
                "or run with --device cpu")
    if exc.kind == "no_device":
        return no_device_message(device, str(exc))
    newer = _PACKAGE_VERSION_RE.search(str(exc))
    if newer:
        return (f"a model was compiled for Edge TPU runtime version {newer.group(1)}, newer than "
                f"the installed {edgetpu_version()}: upgrade libedgetpu, or recompile the model "
                "with an edgetpu_compiler that matches the runtime")
    versions = f"{edgetpu_version()} with {runtime_version(backend)}"
    if exc.kind == "crash":
        return (f"the Edge TPU runtime failed ({exc}): {versions}; a libedgetpu built for "
                "another TensorFlow version fails like this: install one built for this "
                "runtime's TensorFlow (see 'Edge TPU' in the README), or run with --device cpu")
    return f"the Edge TPU failed while {exc.stage} ({exc}): {versions}; or run with --device cpu"


@dataclass(frozen=True)
class ModelChoice:
    """Which file runs a role, on which device, and why: said once at start-up."""

    role: str
    info: ModelInfo
    device: Device
    reason: str

    @property
    def path(self) -> Path:
        return self.info.path


def _check_role(info: ModelInfo, role: str) -> None:
    if role == "detector" and not info.is_detector:
        hint = " (it looks like a classifier)" if info.is_classifier else ""
        raise ModelError(
            f"{info.path} is not an SSD detection model{hint}; "
            "pass a detector with TFLite_Detection_PostProcess outputs to --detection_model"
        )
    if role == "classifier" and not info.is_classifier:
        hint = " (it looks like a detector)" if info.is_detector else ""
        raise ModelError(
            f"{info.path} is not an image classification model{hint}; "
            "pass a classifier with one [1, N] output to --classifier_model"
        )


@dataclass(frozen=True)
class Builds:
    """The builds of one model that exist beside each other: for the Edge TPU, for the CPU."""

    role: str
    path: Path
    tpu: ModelInfo | None
    cpu: ModelInfo | None

    @property
    def given_for_tpu(self) -> bool:
        """The file the user named is an Edge TPU build."""
        return self.tpu is not None and self.tpu.path == self.path

    def refuse_cpu(self) -> None:
        """--device cpu with an Edge TPU build named: say which file to pass instead."""
        if self.given_for_tpu:
            _refuse_cpu(self)

    def on(self, device: Device) -> ModelChoice:
        """The build that runs on ``device``, or a one-line error naming the file and the fix."""
        if device is Device.CPU:
            if self.cpu is None:
                return _refuse_cpu(self)
            return ModelChoice(self.role, self.cpu, Device.CPU, "CPU build")
        if self.tpu is None:
            twin = twin_path(self.path, edgetpu=True)
            raise ModelError(
                f"{self.path} is a CPU model and --device edgetpu needs one compiled for the "
                f"Edge TPU (expected {twin.name}, made by edgetpu_compiler); "
                "pass that file or use --device cpu"
            )
        return ModelChoice(self.role, self.tpu, Device.EDGETPU, "Edge TPU build")


def _refuse_cpu(builds: Builds) -> ModelChoice:
    twin = twin_path(builds.path, edgetpu=False)
    fix = f"pass its CPU build {twin}" if twin.exists() else "pass its CPU build"
    raise ModelError(
        f"{builds.path} is compiled for the Edge TPU and cannot run with --device cpu; "
        f"{fix} or use --device auto"
    )


def find_builds(role: str, path: Path) -> Builds:
    """Read ``path`` and its twin (``x.tflite`` / ``x_edgetpu.tflite``) without running them."""
    info = inspect_model(path)
    _check_role(info, role)
    other = _existing(twin_path(path, edgetpu=not info.edgetpu))
    if other is not None and other.path != info.path:
        _check_role(other, role)
    else:
        other = None
    tpu, cpu = (info, other) if info.edgetpu else (other, info)
    if tpu is not None and not tpu.edgetpu:
        tpu = None
    if cpu is not None and cpu.edgetpu:
        cpu = None
    return Builds(role, path, tpu, cpu)


def _existing(path: Path) -> ModelInfo | None:
    return inspect_model(path) if path.exists() else None
