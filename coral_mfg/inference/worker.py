"""An inference worker process: the detector and the classifier on one device.

Native code runs here and only here: the Edge TPU runtime (``libedgetpu``)
and LiteRT's kernels. If they crash, abort or hang, this process dies or is
killed and the application, which only talks to it over a socket, starts a
new one. Run by the application as ``python -m coral_mfg.inference.worker FD``.

It dies with the application: the kernel kills it when its parent goes
(``PR_SET_PDEATHSIG``), a watchdog thread notices a new parent, and a closed
socket ends its loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from coral_mfg.inference import adapters
from coral_mfg.inference.protocol import (
    Bound,
    Classified,
    Classify,
    Detect,
    Detected,
    Failed,
    InputArena,
    MeasureBound,
    ModelSpec,
    Ready,
    Stage,
    Stop,
    WorkerConfig,
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


def _open(config: WorkerConfig, conn: Connection) -> tuple[_Model, _Model, str]:
    litert = importlib.import_module(config.runtime)
    delegate = None
    if config.detector.edgetpu or config.classifier.edgetpu:
        conn.send(Stage("loading the Edge TPU delegate"))
        options = {"device": config.edgetpu_device} if config.edgetpu_device else {}
        try:
            delegate = litert.load_delegate(config.edgetpu_library, options)
        except OSError as exc:
            raise _RefusedError(_message(exc), "no_runtime") from None
        except ValueError as exc:  # the library returned no delegate: no device it could open
            raise _RefusedError(_message(exc), "no_device") from None
    models = []
    for role, spec in (("detector", config.detector), ("classifier", config.classifier)):
        conn.send(Stage(f"building the {role} interpreter"))
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
        conn.send(Stage(f"running the {role} once"))
        interpreter.invoke()
        models.append(_Model(spec, interpreter))
    via = "the Edge TPU delegate" if delegate is not None else "the CPU"
    return models[0], models[1], f"{config.name}: pid {os.getpid()}, models on {via}"


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


def _classify(clf: _Model, arena: InputArena, lane: int, count: int) -> Classified:
    start = time.perf_counter()
    rows = []
    for i in range(count):
        adapters.write_rgb(clf.interpreter, arena.crops[lane, i])
        clf.interpreter.invoke()
        rows.append(adapters.class_scores(clf.interpreter))
    scores = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
    return Classified(scores, time.perf_counter() - start)


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
    config: WorkerConfig = conn.recv()
    arena = InputArena.attach(config.arena, config.detector.input_size,
                              config.classifier.input_size)
    try:
        det, clf, detail = _open(config, conn)
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
                conn.send(_classify(clf, arena, request.lane, request.count))
            elif isinstance(request, MeasureBound):
                conn.send(_bound(det, clf, request))
        except Exception as exc:  # e.g. an Edge TPU that errors on every invoke
            conn.send(Failed(_message(exc)))


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the application's to handle
    _die_with_parent()
    conn = Connection(int(argv[0]))
    try:
        return serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
