"""An inference process: the detector, the classifiers and the extractor on one device.

Native code runs here and only here: the Edge TPU runtime (``libedgetpu``)
and LiteRT's kernels. If they crash, abort or hang, this process dies or is
killed and the application, which only talks to it over a socket, starts a
new one. Run by the application as ``python -m coral_mfg.inference.process FD``.

It dies with the application: the kernel kills it when its parent goes
(``PR_SET_PDEATHSIG``), a watchdog thread notices a new parent, and a closed
socket ends its loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.core.threads import as_interactive
from coral_mfg.inference import adapters, device_lock
from coral_mfg.inference.protocol import (
    Bound,
    Classified,
    Classify,
    Detect,
    Detected,
    Failed,
    InputArena,
    KnownAnswer,
    MeasureBound,
    ModelSpec,
    ProcessConfig,
    Ready,
    RuntimeLoaded,
    Stage,
    Step,
    Stop,
)

PARENT_POLL_S = 0.5
PR_SET_PDEATHSIG = 1


class _RefusedError(Exception):
    """Opening failed in a way the application can name (see :class:`Failed`)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _die_with_parent() -> None:
    parent = os.getppid()
    with contextlib.suppress(AttributeError, OSError):  # not Linux: the watchdog still works
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent:
        os._exit(0)


class _Model:
    """One interpreter and what the adapters need to feed and read it."""

    def __init__(self, spec: ModelSpec, interpreter: Any) -> None:
        self.spec = spec
        self.interpreter = interpreter
        self.layout = adapters.DetectionLayout(*spec.layout) if spec.layout else None


def _open(config: ProcessConfig, conn: Connection) -> tuple[_Model, list[_Model], str]:
    litert = importlib.import_module(config.runtime)
    delegate = None
    runtime = ""
    if config.detector.edgetpu or any(c.edgetpu for c in config.crop_models):
        runtime = _load_edgetpu(config, conn)
        name = config.edgetpu_name or "the Edge TPU"
        conn.send(Stage(f"opening the Edge TPU {name}", Step.OPEN))
        options = {"device": config.edgetpu_device} if config.edgetpu_device else {}
        try:
            delegate = litert.load_delegate(config.edgetpu_library, options)
        except OSError as exc:
            raise _RefusedError(_message(exc), "no_runtime") from None
        except ValueError as exc:  # the library returned no delegate: no device it could open
            raise _RefusedError(_message(exc), "no_device") from None
        finally:
            _verbosity(config.edgetpu_library, 0)  # its reason is in the log; quiet from here
    models = []
    roles = [("detector", config.detector), ("classifier", config.classifier),
             *((f"camera classifier {Path(c.path).name}", c) for c in config.classifiers),
             *(("embedding extractor", c) for c in [config.extractor] if c is not None)]
    for role, spec in roles:
        conn.send(Stage(f"building the {role} interpreter", Step.BUILD))
        try:
            # One delegate for both models: co-compiled models share the device's cache.
            # A CPU build gives the delegate nothing to claim and runs on LiteRT's kernels.
            interpreter = litert.Interpreter(
                model_path=spec.path, num_threads=config.cpu_threads,
                experimental_delegates=[delegate] if delegate is not None else None)
            interpreter.allocate_tensors()
        except ValueError as exc:
            if spec.edgetpu:
                raise  # the delegate refused it: a device or runtime problem
            raise _RefusedError(f"{spec.path} failed to load ({_message(exc)})", "model") from None
        conn.send(Stage(f"running the {role} once", Step.INVOKE))
        interpreter.invoke()
        models.append(_Model(spec, interpreter))
    check = ""
    if config.known_answer is not None and config.classifier.edgetpu:
        conn.send(Stage("checking the classifier's answers against its CPU build", Step.CHECK))
        check = "; " + _known_answer(litert, models[1], config.known_answer, config.cpu_threads)
    via = "the Edge TPU delegate" if delegate is not None else "the CPU"
    return models[0], models[1:], (f"{config.name}: pid {os.getpid()}, models on {via}"
                                   f"{runtime}{check}")


def _load_edgetpu(config: ProcessConfig, conn: Connection) -> str:
    """Claim the device, then load libedgetpu and say which one: before anything may hang."""
    name = config.edgetpu_name or "the Edge TPU"
    conn.send(Stage(f"claiming the Edge TPU {name}", Step.CLAIM))
    try:
        device_lock.claim(config.edgetpu_lock or device_lock.ANY_DEVICE, os.getppid(), name)
    except device_lock.InUseError as exc:
        raise _RefusedError(f"Edge TPU {name} is in use by {exc.holder.describe()}",
                            "in_use") from None
    except OSError as exc:
        where = device_lock.lock_path(config.edgetpu_lock or device_lock.ANY_DEVICE)
        raise _RefusedError(f"cannot make the Edge TPU lock {where} ({exc.strerror}): set "
                            f"{device_lock.LOCK_DIR_ENV} to a writable folder", "setup") from None
    conn.send(Stage(f"loading the Edge TPU runtime {config.edgetpu_library}", Step.RUNTIME))
    try:
        lib = ctypes.CDLL(config.edgetpu_library)
    except OSError as exc:  # not installed, a dependency missing, another architecture
        raise _RefusedError(_message(exc), "no_runtime") from None
    version = _call_version(lib)
    path = _loaded_path(config.edgetpu_library)
    conn.send(RuntimeLoaded(config.edgetpu_library, path, version))
    # libedgetpu says why it cannot open a device only at verbosity 1 or more.
    _verbosity(config.edgetpu_library, 1)
    return f"; {config.edgetpu_library} {version} ({path})"


def _call_version(lib: ctypes.CDLL) -> str:
    try:
        fn = lib.edgetpu_version
    except AttributeError:
        return "version unknown (no edgetpu_version())"
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    raw = fn()
    return raw.decode("utf-8", "replace") if raw else "version unknown"


def _verbosity(library: str, level: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fn = ctypes.CDLL(library).edgetpu_verbosity
        fn.argtypes = [ctypes.c_int]
        fn.restype = None
        fn(level)


def _loaded_path(library: str) -> str:
    """The file the loader picked for ``library`` (LD_LIBRARY_PATH and all), from our maps."""
    stem = library.split(".so", maxsplit=1)[0]
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if Path(path).name.startswith(stem):
                return path
    return library


def _known_answer(litert: Any, tpu: _Model, answer: KnownAnswer, threads: int) -> str:
    """Run the shipped crop through both builds of the classifier; refuse when they disagree."""
    width, height = tpu.spec.input_size
    image = cv2.imread(answer.image, cv2.IMREAD_COLOR)
    if image is None:
        raise _RefusedError(f"the known-answer crop {answer.image} cannot be read: reinstall "
                            "coral-mfg", "setup")
    rgb = np.empty((height, width, 3), np.uint8)
    adapters.resize_rgb(np.asarray(image, np.uint8), rgb)
    cpu = litert.Interpreter(model_path=answer.cpu_model, num_threads=threads)
    cpu.allocate_tensors()
    scores = []
    for interpreter in (cpu, tpu.interpreter):
        adapters.write_rgb(interpreter, rgb)
        interpreter.invoke()
        scores.append(adapters.class_scores(interpreter))
    want, got = scores
    scale = float(cpu.get_output_details()[0]["quantization"][0]) or 1.0 / 256
    shown = (f"Edge TPU {_fmt(got)} vs CPU {_fmt(want)}")
    if want.shape != got.shape:
        raise _RefusedError(f"known-answer check failed: {shown} (different shapes)",
                            "wrong_answer")
    steps = float(np.max(np.abs(want - got))) / scale
    if steps > answer.steps:
        raise _RefusedError(f"known-answer check failed: {shown}, {steps:.0f} quantization steps "
                            f"apart (at most {answer.steps} allowed)", "wrong_answer")
    return f"known-answer check passed ({shown}, within {steps:.0f} step(s))"


def _fmt(scores: npt.NDArray[np.float32]) -> str:
    return "[" + " ".join(f"{v:.3f}" for v in scores[:4]) + (" ...]" if len(scores) > 4 else "]")


def _message(exc: BaseException) -> str:
    """The runtime's message on one line (it may have several, or none, or repeat itself)."""
    lines: list[str] = []
    for line in (x.strip() for x in str(exc).splitlines()):
        if line and line not in lines:
            lines.append(line)
    return "; ".join(lines) if lines else type(exc).__name__


def _detect(det: _Model, arena: InputArena, lane: int) -> Detected:
    assert det.layout is not None
    start = time.perf_counter()
    adapters.write_rgb(det.interpreter, arena.detector[lane])
    det.interpreter.invoke()
    raw = adapters.raw_detections(det.interpreter, det.layout)
    return Detected(raw, time.perf_counter() - start)


def _classify(models: list[_Model], arena: InputArena, lane: int, count: int) -> Classified:
    start = time.perf_counter()
    outputs = []
    for model in models:
        rows = []
        crops = arena.crops_at(model.spec.input_size)
        for i in range(count):
            adapters.write_rgb(model.interpreter, crops[lane, i])
            model.interpreter.invoke()
            rows.append(adapters.class_scores(model.interpreter))
        outputs.append(np.stack(rows) if rows else np.zeros((0, 0), np.float32))
    return Classified(tuple(outputs), time.perf_counter() - start)


def _bound(det: _Model, clf: _Model, request: MeasureBound) -> Bound:
    frames, owed = 0, 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < request.seconds:
        det.interpreter.invoke()
        owed += request.classify_share
        while owed >= 1.0:
            clf.interpreter.invoke()
            owed -= 1.0
        frames += 1
    return Bound(frames, time.perf_counter() - start)


def serve(conn: Connection) -> int:
    config: ProcessConfig = conn.recv()
    arena = InputArena.attach(config.arena, config.detector.input_size, config.crop_size)
    try:
        det, clfs, detail = _open(config, conn)
    except _RefusedError as exc:
        conn.send(Failed(str(exc), exc.kind))
        return 3
    except Exception as exc:
        conn.send(Failed(_message(exc)))
        return 4
    conn.send(Ready(detail))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return 0  # the application is gone
        if isinstance(request, Stop):
            return 0
        try:
            if isinstance(request, Detect):
                conn.send(_detect(det, arena, request.lane))
            elif isinstance(request, Classify):
                conn.send(_classify([clfs[m] for m in request.models], arena, request.lane,
                                    request.count))
            elif isinstance(request, MeasureBound):
                conn.send(_bound(det, clfs[0], request))
        except Exception as exc:  # e.g. an Edge TPU that errors on every invoke
            conn.send(Failed(_message(exc)))


def describe_runtime(library: str) -> int:
    """Print what ``library`` is as one JSON line, touching no device: for doctor.

    Loading libedgetpu registers its drivers and ``edgetpu_version()`` only
    formats a string; neither enumerates nor opens a device.
    """
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        print(json.dumps({"error": _message(exc)}))
        return 0
    print(json.dumps({"version": _call_version(lib), "path": _loaded_path(library)}))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--describe-runtime"]:
        return describe_runtime(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the application's to handle
    as_interactive()  # started by a pipeline thread, it would be batch work like it
    _die_with_parent()
    conn = Connection(int(argv[0]))
    try:
        return serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
