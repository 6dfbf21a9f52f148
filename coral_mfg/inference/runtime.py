"""Which device and which model builds a run uses, and what to say when the Edge TPU fails.

Nothing here loads native inference code: the ``libedgetpu`` delegate is only
ever loaded inside an inference process (see :mod:`coral_mfg.inference.process`),
so a runtime that crashes cannot take the application with it. Which Corals
are attached comes from :mod:`coral_mfg.inference.discovery` (sysfs, no native
code); Google's pycoral, when importable, is used only by doctor to list devices.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any

from coral_mfg.config.settings import EDGETPU_DEVICE
from coral_mfg.core.errors import DeviceError, ModelError
from coral_mfg.inference import discovery
from coral_mfg.inference.discovery import SETUP_DOC, Coral
from coral_mfg.inference.errors import ProcessStartError, describe_exit
from coral_mfg.inference.model_file import ModelInfo, inspect_model, twin_path
from coral_mfg.inference.protocol import Step

log = logging.getLogger(__name__)


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
    if not EDGETPU_DEVICE.match(device):
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
    """LiteRT (``ai_edge_litert``): the one inference runtime the application runs on."""
    try:
        mod = importlib.import_module("ai_edge_litert.interpreter")
    except ImportError as exc:
        raise DeviceError(
            f"the inference runtime LiteRT cannot be imported ({exc}); run "
            "'pip install ai-edge-litert' in the application's environment"
        ) from None
    top = importlib.import_module("ai_edge_litert")
    version = getattr(top, "__version__", None) or _dist_version("ai_edge_litert")
    return Backend("ai_edge_litert", version, mod)


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


def no_device_message(device: str | None, detail: str = "",
                      found: list[Coral] | None = None) -> str:
    """No Edge TPU answered: say whether one is attached but cannot be opened, or none is."""
    where = f" at '{device}'" if device else ""
    detail = "; ".join(line.strip() for line in detail.splitlines() if line.strip())
    extra = f" ({detail})" if detail else ""
    found = discovery.survey() if found is None else found
    if found:
        seen = ", ".join(f"{c.kind} {c.sysname}" for c in found)
        problems = [c.problem for c in found if c.problem]
        held = [f"{c.kind} {c.sysname} is held open by {', '.join(c.holders)}"
                for c in found if c.holders]
        if problems or held:
            return (f"an Edge TPU is attached ({seen}) but could not be opened{where}{extra}: "
                    f"{'; '.join(problems + held)}; or run with --device cpu")
        return (
            f"an Edge TPU is attached ({seen}) but could not be opened{where}{extra}: add your "
            "user to the plugdev group (USB, with the udev rules of the libedgetpu package) or "
            "the apex group (PCIe), make sure no other process holds it (a USB Edge TPU opens "
            "in one process at a time), unplug and re-plug it, or run with --device cpu"
        )
    return (
        f"no Edge TPU found{where}{extra}: {discovery.nothing_found_hint()} (run 'coral-mfg "
        "doctor' to list devices) or run with --device cpu"
    )


def edgetpu_version() -> str:
    """Which libedgetpu package is installed, for when no process could load the library
    itself (a process asks the library: see :class:`RuntimeLoaded`)."""
    packages = _dpkg_versions("libedgetpu1-*")
    if packages:
        return "libedgetpu " + ", ".join(packages)
    path = library_path(edgetpu_library())
    return f"libedgetpu {path or edgetpu_library()} (version unknown: not installed as a package)"


#: Loading libedgetpu and asking its version: a few hundred milliseconds, on a slow disk more.
DESCRIBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class LibraryReport:
    """What libedgetpu says about itself: ``edgetpu_version()`` and the file loaded."""

    ok: bool
    detail: str


def describe_library() -> LibraryReport:
    """Load libedgetpu in a child process and ask its version, touching no device.

    The child is the process module (native code stays out of this process); a
    library that crashes or hangs while loading is reported as such.
    """
    library = edgetpu_library()
    command = [sys.executable, "-m", "coral_mfg.inference.process", "--describe-runtime", library]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=DESCRIBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return LibraryReport(False, f"{library} hung for {DESCRIBE_TIMEOUT_S:g} s while loading")
    except OSError as exc:
        return LibraryReport(False, f"cannot start a process to load {library} ({exc})")
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if done.returncode != 0 or not isinstance(answer, dict) or not answer:
        tail = " | ".join(x.strip() for x in done.stderr.splitlines()[-2:] if x.strip())
        how = describe_exit(done.returncode) + (f": {tail[:200]}" if tail else "")
        return LibraryReport(False, f"{library} failed while loading ({how})")
    if "error" in answer:
        return LibraryReport(False, f"{library} could not be loaded ({answer['error']})")
    return LibraryReport(True, f"{library} {answer.get('version')} ({answer.get('path')})")


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
        try:
            if candidate.exists():
                return str(candidate.resolve())
        except OSError:  # a folder this user may not look into
            continue
    return None


def runtime_version(backend: Backend) -> str:
    """The inference runtime and the TensorFlow Lite it was built from, for messages."""
    return f"{backend.name} {backend.version} (TensorFlow Lite >= 2.19)"


_PACKAGE_VERSION_RE = re.compile(r"Package requires runtime version \((\d+)\)")
_TF_FIX = ("a libedgetpu built for another TensorFlow version does this: install one built for "
           f"this runtime's TensorFlow (see {SETUP_DOC}), or run with --device cpu")


def edgetpu_failure(exc: ProcessStartError, device: str | None, backend: Backend,
                    found: list[Coral] | None = None) -> str:
    """One line for an Edge TPU process that could not start: the cause and the fix.

    What the process was doing decides the story: a death or hang while opening
    the device is the device's (permissions, another process, the cable), never
    the TensorFlow version's; only one while building or running the models is
    what a libedgetpu built for another TensorFlow does. Once the process had
    loaded libedgetpu, the line names the version the library reported.
    """
    message = _failure(exc, device, backend, found)
    if exc.runtime and exc.runtime not in message:
        message += f" [{exc.runtime}]"
    return message


def _failure(exc: ProcessStartError, device: str | None, backend: Backend,
             found: list[Coral] | None) -> str:
    library = edgetpu_library()
    if exc.kind == "model":
        return str(exc)
    if exc.kind == "in_use":
        return (f"{exc}: it holds the Coral while it runs (opening it here would reset it under "
                "that process); stop it first, or run with --device cpu")
    if exc.kind == "setup":
        return f"{exc}; or run with --device cpu"
    if exc.kind == "no_runtime":
        if f"{library}: cannot open shared object" in str(exc):
            return (f"the Edge TPU runtime {library} is not installed ({exc}): install a "
                    f"libedgetpu built for {runtime_version(backend)} (see {SETUP_DOC}), or run "
                    "with --device cpu")
        return (f"the Edge TPU runtime {library} could not be loaded ({exc}): {_load_fix(exc)} "
                f"(see {SETUP_DOC}), or run with --device cpu")
    if exc.kind == "no_device":
        return no_device_message(device, str(exc), found)
    versions = f"{exc.runtime or edgetpu_version()} with {runtime_version(backend)}"
    if exc.kind == "wrong_answer":
        return f"the Edge TPU gives wrong answers ({exc}): {versions}; {_TF_FIX}"
    newer = _PACKAGE_VERSION_RE.search(str(exc))
    if newer:
        return (f"a model was compiled for Edge TPU runtime version {newer.group(1)}, newer than "
                f"the installed {exc.runtime or edgetpu_version()}: upgrade libedgetpu, or "
                "recompile the model with an edgetpu_compiler that matches the runtime")
    native = exc.kind in ("crash", "hang")
    if native and exc.step in (Step.START, Step.CLAIM, Step.RUNTIME):
        return (f"the Edge TPU runtime {library} failed while loading ({exc}): reinstall it "
                f"(see {SETUP_DOC}), or run with --device cpu")
    if native and exc.step == Step.OPEN:
        return _open_failure(exc, device, found)
    if native:
        return f"the Edge TPU runtime failed ({exc}): {versions}; {_TF_FIX}"
    return f"the Edge TPU failed while {exc.stage} ({exc}): {versions}; or run with --device cpu"


def runtime_fault(exc: ProcessStartError) -> bool:
    """The failure is libedgetpu's own (missing, unloadable, built for another TensorFlow),
    not the device's: the set-up steps for the runtime are what the user needs."""
    if exc.kind in ("no_runtime", "wrong_answer"):
        return True
    return exc.kind in ("crash", "hang") and exc.step not in (Step.CLAIM, Step.OPEN)


def _load_fix(exc: ProcessStartError) -> str:
    """What to do about a libedgetpu the loader refused, from the loader's own words."""
    text = str(exc)
    if "wrong ELF class" in text or "cannot open shared object file: Exec format" in text \
            or "invalid ELF header" in text:
        return (f"install the libedgetpu for this machine ({platform.machine()}) and this "
                "operating system")
    missing = re.search(r"([\w.+-]+\.so[\w.]*): cannot open shared object file", text)
    if missing:
        lib = missing.group(1)
        hint = " (apt-get install libusb-1.0-0)" if lib.startswith("libusb") else ""
        return f"install {lib}, which libedgetpu needs{hint}"
    return "reinstall libedgetpu"


def _open_failure(exc: ProcessStartError, device: str | None, found: list[Coral] | None) -> str:
    """libedgetpu died or hung while opening the device: say what the OS shows about it."""
    found = discovery.survey() if found is None else found
    target, name = discovery.select(found, device)
    head = f"the Edge TPU {name} did not open ({exc})"
    debug = "libedgetpu's own reason is in the log with --log_level debug"
    if target is None:
        hint = discovery.nothing_found_hint() if not found else (
            f"no Edge TPU matches '{device}' (found: "
            f"{', '.join(f'{c.kind} {c.sysname}' for c in found)})")
        return f"{head}: {hint}; {debug}; or run with --device cpu"
    if target.problem:
        return f"{head}: {target.problem}; or run with --device cpu"
    if target.holders:
        return (f"{head}: it is held open by {', '.join(target.holders)}; stop that program, "
                "or run with --device cpu")
    return (f"{head}: {target.describe()} shows and may be opened by this user, yet libedgetpu "
            "could not open it: another program may hold it, or it needs a re-plug (unplug it, "
            f"plug it back in, and run 'coral-mfg doctor'); {debug}; or run with --device cpu")


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
    if role == "extractor" and (len(info.outputs) != 1 or info.is_detector):
        raise ModelError(
            f"{info.path} is not an embedding extractor (one output, an embedding of the "
            "picture); run 'coral-mfg fetch-assets' to restore the station's"
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
