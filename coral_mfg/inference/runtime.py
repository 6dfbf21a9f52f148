"""Open interpreters on the Edge TPU or the CPU, and say which and why.

The Edge TPU is reached through Google's pycoral when it is importable (it
ships with the Edge TPU runtime on Python <= 3.9), and otherwise through the
``libedgetpu`` delegate loaded by LiteRT (``ai_edge_litert``) or the legacy
``tflite_runtime``. The CPU path is LiteRT with XNNPACK.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any

from coral_mfg.errors import DeviceError, ModelError
from coral_mfg.inference.model_file import ModelInfo, inspect_model, twin_path
from coral_mfg.quiet import native_stderr_to_log

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


class EdgeTpu:
    """One Edge TPU opened once and shared by every interpreter that runs on it.

    Sharing the device is what lets co-compiled models keep their parameters
    in its on-chip cache instead of reloading them at every switch.
    """

    def __init__(self, backend: Backend, device: str | None = None) -> None:
        self.backend = backend
        self.device = parse_device_string(device)
        self.pycoral = google_pycoral()
        self._delegate: Any = None
        if self.pycoral is None:
            self._delegate = load_edgetpu_delegate(backend, self.device)

    @property
    def via(self) -> str:
        return "pycoral" if self.pycoral is not None else f"{self.backend.name} delegate"

    def interpreter(self, model: Path) -> Any:
        if self.pycoral is not None:
            try:
                return self.pycoral.make_interpreter(str(model), device=self.device or "")
            except ValueError as exc:
                raise DeviceError(_no_device_message(self.device, str(exc))) from None
        return self.backend.interpreter(
            model_path=str(model), experimental_delegates=[self._delegate]
        )


def _no_device_message(device: str | None, detail: str = "") -> str:
    where = f" at '{device}'" if device else ""
    detail = "; ".join(line.strip() for line in detail.splitlines() if line.strip())
    extra = f" ({detail})" if detail else ""
    return (
        f"no Edge TPU found{where}{extra}: plug in the Coral accelerator "
        "(run 'coral-mfg doctor' to list devices) or run with --device cpu"
    )


def load_edgetpu_delegate(backend: Backend, device: str | None) -> Any:
    """Load ``libedgetpu`` for ``device``; the runtime raises opaque errors, so check first."""
    lib = edgetpu_library()
    try:
        ctypes.CDLL(lib)
    except OSError:
        raise DeviceError(
            f"the Edge TPU runtime {lib} is not installed: install 'libedgetpu1-std' from "
            "Coral's package repository, or run with --device cpu"
        ) from None
    options = {"device": device} if device else {}
    try:
        return backend.interpreter_module.load_delegate(lib, options)
    except (ValueError, RuntimeError, OSError) as exc:
        raise DeviceError(_no_device_message(device, str(exc).strip())) from None


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


def choose_model(
    role: str, path: Path, requested: Device, tpu_available: Callable[[], bool]
) -> ModelChoice:
    """Pick the build of ``path`` that can run on ``requested``.

    ``tpu_available`` is called only when the answer matters, so a CPU run
    never touches the Edge TPU runtime.
    """
    info = inspect_model(path)
    _check_role(info, role)
    if requested is Device.CPU:
        if info.edgetpu:
            twin = twin_path(path, edgetpu=False)
            fix = f"pass its CPU build {twin}" if twin.exists() else "pass its CPU build"
            raise ModelError(
                f"{path} is compiled for the Edge TPU and cannot run with --device cpu; "
                f"{fix} or use --device auto"
            )
        return ModelChoice(role, info, Device.CPU, "--device cpu")

    if requested is Device.EDGETPU:
        if not tpu_available():  # no device is the more basic problem, so it comes first
            raise DeviceError(_no_device_message(None))
        chosen = info
        if not info.edgetpu:
            twin = twin_path(path, edgetpu=True)
            twin_info = inspect_model(twin) if twin.exists() else None
            if twin_info is None or not twin_info.edgetpu:
                raise ModelError(
                    f"{path} is a CPU model and --device edgetpu needs one compiled for the "
                    f"Edge TPU (expected {twin.name}, made by edgetpu_compiler); "
                    "pass that file or use --device cpu"
                )
            chosen = twin_info
        _check_role(chosen, role)
        return ModelChoice(role, chosen, Device.EDGETPU, "--device edgetpu")

    # auto
    tpu_build = info if info.edgetpu else _existing(twin_path(path, edgetpu=True))
    cpu_build = _existing(twin_path(path, edgetpu=False)) if info.edgetpu else info
    if tpu_build is not None and tpu_build.edgetpu and tpu_available():
        _check_role(tpu_build, role)
        return ModelChoice(role, tpu_build, Device.EDGETPU, "Edge TPU found")
    if cpu_build is not None and not cpu_build.edgetpu:
        _check_role(cpu_build, role)
        reason = "no Edge TPU" if tpu_build is not None else "no Edge TPU build of this model"
        if info.edgetpu:
            reason = f"no Edge TPU, so the CPU twin of {path.name} runs"
        return ModelChoice(role, cpu_build, Device.CPU, reason)
    raise ModelError(
        f"{path} is compiled for the Edge TPU, no Edge TPU is available and there is no CPU "
        f"build {twin_path(path, edgetpu=False).name} beside it; run 'coral-mfg fetch-assets' "
        "or pass a CPU model"
    )


def _existing(path: Path) -> ModelInfo | None:
    return inspect_model(path) if path.exists() else None


@dataclass
class Runtime:
    """Opens interpreters for chosen models; the Edge TPU is opened at most once."""

    requested: Device = Device.AUTO
    device_string: str | None = None
    cpu_threads: int = 2
    backend: Backend = field(default_factory=runtime_backend)
    _tpu: EdgeTpu | None = None
    _tpu_error: DeviceError | None = None
    _probed: bool = False

    def tpu_available(self) -> bool:
        """True when an Edge TPU opened; with --device edgetpu, raise the reason instead."""
        if not self._probed:
            self._probed = True
            try:
                self._tpu = EdgeTpu(self.backend, self.device_string)
            except DeviceError as exc:
                self._tpu_error = exc
        if self._tpu is None and self.requested is Device.EDGETPU:
            assert self._tpu_error is not None
            raise self._tpu_error
        return self._tpu is not None

    @property
    def tpu_error(self) -> DeviceError | None:
        return self._tpu_error

    def choose(self, role: str, path: Path) -> ModelChoice:
        return choose_model(role, path, self.requested, self.tpu_available)

    def open(self, choice: ModelChoice) -> Any:
        """An allocated interpreter for ``choice`` on its device."""
        try:
            with native_stderr_to_log():
                if choice.device is Device.EDGETPU:
                    assert self._tpu is not None
                    interp = self._tpu.interpreter(choice.path)
                else:
                    interp = self.backend.interpreter(
                        model_path=str(choice.path), num_threads=self.cpu_threads
                    )
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(
                f"{choice.path} failed to load on {choice.device} ({str(exc).splitlines()[0]}); "
                "run 'coral-mfg fetch-assets' to restore it or pass another model"
            ) from None
        return interp

    def describe(self) -> str:
        if self._tpu is not None:
            return f"Edge TPU {self._tpu.device or '(first found)'} via {self._tpu.via}"
        return f"CPU ({self.backend.name} {self.backend.version}, {self.cpu_threads} threads)"
