"""The application's handle on one inference process.

Every call has a deadline. A process that dies (any signal: SIGSEGV, SIGABRT,
SIGKILL), does not answer in time (it is killed), or breaks its socket raises
:class:`ProcessDownError` with the reason in words; nothing blocks for ever and the
request in flight is reported as lost, never silently dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from enum import StrEnum
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

from coral_mfg.inference.errors import (
    ProcessDownError,
    ProcessStartError,
    RequestError,
    describe_exit,
)
from coral_mfg.inference.protocol import (
    Bound,
    Classified,
    Classify,
    Detect,
    Detected,
    Failed,
    InputArena,
    MeasureBound,
    ProcessConfig,
    Ready,
    Reply,
    Request,
    RuntimeLoaded,
    Stage,
    Step,
    Stop,
)

log = logging.getLogger(__name__)
native = logging.getLogger("coral_mfg.native")

#: Each start-up step (see protocol.Step): at least this long, and at least this many
#: times the inference timeout.
START_MIN_S = 8.0
START_PER_TIMEOUT = 4
#: The interpreter starting and its imports (a cold Raspberry Pi's SD card is slow).
LAUNCH_S = 20.0
#: libedgetpu opening the device. A USB Coral it may not open is tried 25 times,
#: 1 s apart, before it gives up; one whose firmware is not loaded is opened, reset
#: and opened again (1 s before each). Its own verdict must come before ours.
OPEN_DEVICE_S = 45.0
STOP_WAIT_S = 0.5
STDERR_TAIL = 3
#: Errors in a row (the process alive but every request failing) before it is restarted.
ERRORS_BEFORE_RESTART = 5
MESSAGE_MAX = 200
HOPS_KEPT = 2000
#: Replies whose work is kept for the load figures: several seconds at a busy device's rate.
WORK_KEPT = 4096
#: How fast the estimate of a call's time follows the latest calls (a moving average).
CALL_AVERAGE = 0.1


class Work(NamedTuple):
    """One request as the process spent it: when its reply came (monotonic), how long the
    process worked on it, and whether it was a frame's detection."""

    end: float
    busy_s: float
    frame: bool


class ProcessState(StrEnum):
    """Where an inference process is in its life, as the pool and the screen see it."""

    DOWN = "down"
    STARTING = "starting"
    UP = "up"
    STOPPED = "stopped"


class ProcessClient:
    """One inference process: started, called with deadlines, stopped; restartable."""

    def __init__(self, config: ProcessConfig, arena: InputArena, timeout: float) -> None:
        self.config = config
        self.arena = arena
        self.timeout = timeout
        self.state = ProcessState.DOWN
        self.reason = "not started"
        self.proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._stderr = Path(tempfile.gettempdir()) / f"coral-mfg-{os.getpid()}-{config.name}.log"
        self._lock = threading.Lock()  # start and stop
        self._send_lock = threading.Lock()
        self._turn = threading.Condition()
        #: state, reason, generation, the process and its socket change together under
        #: this lock, which is held for nothing else (never while waiting for another)
        self._state_lock = threading.Lock()
        self._sent = 0  # tickets given out to this process's requests
        self._received = 0  # replies taken
        #: round trip minus the process's own time, recent calls; with errors_in_a_row,
        #: changed by both lanes' threads: under _stats_lock
        self._hops: deque[float] = deque(maxlen=HOPS_KEPT)
        self.errors_in_a_row = 0
        self._stats_lock = threading.Lock()
        self.generation = 0  # processes started so far: tells one loss from its echoes
        self.runtime = ""  # "libedgetpu.so.1 <its edgetpu_version()>" once a process loaded it
        #: the process's own time on recent requests, under _stats_lock; kept across
        #: restarts: it is the device's, whichever process drives it
        self._work: deque[Work] = deque(maxlen=WORK_KEPT)
        #: a moving average of the process's time per request (seconds; 0 until one ran):
        #: how long a request queued behind another waits, for the pool's choice of process
        self.call_s = 0.0
        self.first_up: float | None = None  # when a process of this client first answered

    @property
    def start_timeout(self) -> float:
        """The deadline of each start-up step (opening a device gets longer)."""
        return max(START_MIN_S, START_PER_TIMEOUT * self.timeout)

    def step_deadline(self, step: str) -> float:
        if step == Step.OPEN:
            return max(OPEN_DEVICE_S, self.start_timeout)
        if step == Step.START:
            return max(LAUNCH_S, self.start_timeout)
        return self.start_timeout

    @property
    def name(self) -> str:
        return self.config.name

    # --- life ------------------------------------------------------------------------------

    def start(self) -> str:
        """Spawn the process and wait until its models answered, or raise ProcessStartError."""
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> None:
        """Start the process; its models open meanwhile (see :meth:`wait_ready`).

        Call it from a thread that lives as long as the process should: the kernel
        ends the process when the thread that started it ends (PR_SET_PDEATHSIG).
        """
        with self._lock:
            self._kill()
            self._set_state(ProcessState.STARTING)
            parent, child = socket.socketpair()
            with self._stderr.open("wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "coral_mfg.inference.process", str(child.fileno())],
                    pass_fds=[child.fileno()], stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=err, close_fds=True,
                )
            with self._state_lock:
                self.proc = proc
            child.close()
            with self._send_lock, self._turn:
                conn = Connection(parent.detach())
                conn.send(self.config)
                with self._state_lock:
                    self._conn = conn
                    self.generation += 1
                with self._stats_lock:
                    self._hops.clear()
                self._sent = self._received = 0

    def wait_ready(self) -> str:
        with self._lock:
            try:
                detail = self._await_ready()
            except ProcessStartError as exc:
                self._kill()
                self._forward_stderr()
                self._set_state(ProcessState.DOWN, str(exc))
                raise
            with self._stats_lock:
                self.errors_in_a_row = 0
                if self.first_up is None:
                    self.first_up = time.monotonic()
            self._set_state(ProcessState.UP, "")
            self._forward_stderr()
            return detail

    def _forward_stderr(self) -> None:
        """What native code printed while opening the models (libedgetpu's reasons for
        not opening a device among it), to the debug log."""
        if not native.isEnabledFor(logging.DEBUG):
            return
        try:
            text = self._stderr.read_text(errors="replace")
        except OSError:
            return
        for line in text.splitlines():
            if line.strip():
                native.debug("%s: %s", self.name, line.strip())

    def _await_ready(self) -> str:
        """Follow the process through its steps, each within its own deadline."""
        assert self._conn is not None
        stage, step = "starting", Step.START
        self.runtime = ""
        limit = self.step_deadline(step)
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not self._conn.poll(left):
                    raise ProcessStartError(f"no answer within {limit:g} s while {stage} (hung)",
                                           kind="hang", stage=stage, step=step,
                                           runtime=self.runtime)
                reply = self._conn.recv()
            except (EOFError, OSError):
                raise ProcessStartError(self._death(stage), kind="crash", stage=stage, step=step,
                                       runtime=self.runtime) from None
            if isinstance(reply, Stage):
                stage, step = reply.what, reply.step
                limit = self.step_deadline(step)
                deadline = time.monotonic() + limit
            elif isinstance(reply, RuntimeLoaded):
                self.runtime = f"{reply.library} {reply.version}"
                log.debug("%s: %s is %s, %s", self.name, reply.library, reply.path, reply.version)
            elif isinstance(reply, Ready):
                return reply.detail
            elif isinstance(reply, Failed):
                raise ProcessStartError(reply.message, kind=reply.kind, stage=stage, step=step,
                                       runtime=self.runtime)

    def _death(self, doing: str) -> str:
        """Why the process ended, once it has: its exit and the last lines it printed."""
        code = self.proc.wait(5) if self.proc is not None else None
        tail = self.stderr_tail()
        return f"{describe_exit(code)} while {doing}" + (f" ({tail})" if tail else "")

    def stderr_tail(self) -> str:
        try:
            lines = self._stderr.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        lines = [line.strip() for line in lines if line.strip()]
        return " | ".join(lines[-STDERR_TAIL:])[:300]

    def ask_to_stop(self) -> None:
        """Ask an idle process to exit by itself; a busy one is left to :meth:`stop`."""
        if not self._send_lock.acquire(timeout=0.05):
            return
        try:
            if self._conn is not None and self.state is ProcessState.UP \
                    and self._sent == self._received:
                with contextlib.suppress(OSError):
                    self._conn.send(Stop())
        finally:
            self._send_lock.release()

    def stop(self, grace: float = STOP_WAIT_S) -> None:
        """Make sure the process has ended, waiting ``grace`` for it to exit by itself.

        Requests in flight are not waited for: the process is killed under them.
        Safe to call twice.
        """
        self.ask_to_stop()
        with self._lock:
            self._set_state(ProcessState.STOPPED)
            if self.proc is not None and grace > 0:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(grace)
            self._kill()
            with self._turn:
                self._turn.notify_all()
        self._stderr.unlink(missing_ok=True)

    def _kill(self) -> None:
        with self._state_lock:
            proc, conn, self._conn = self.proc, self._conn, None
        _end(proc, conn)

    def _set_state(self, state: ProcessState, reason: str | None = None) -> None:
        with self._state_lock:
            self.state = state
            if reason is not None:
                self.reason = reason

    def mark_down(self, reason: str) -> None:
        """The pool gave up on this process (its device failed over): down, not stopped."""
        self._set_state(ProcessState.DOWN, reason)

    def hops(self) -> list[float]:
        """The recent hops to the process and back (seconds), a copy."""
        with self._stats_lock:
            return list(self._hops)

    def work(self) -> list[Work]:
        """The process's own time on its recent requests, oldest first, a copy."""
        with self._stats_lock:
            return list(self._work)

    # --- calls -----------------------------------------------------------------------------

    def call(self, request: Request, timeout: float | None = None) -> Reply:
        """One request, one reply, within the deadline; the process is killed if it misses it.

        Several threads may call at once: requests queue in the socket, so the
        process starts the next the moment it answers one; replies come back in
        order, each to its caller (a ticket says whose turn it is).
        """
        limit = self.timeout if timeout is None else timeout
        with self._send_lock:
            conn, generation = self._conn, self.generation
            if self.state is not ProcessState.UP or conn is None:
                raise ProcessDownError(self.reason or "not running")
            ticket = self._sent
            self._sent += 1
            queued = ticket != self._received
            sent = time.perf_counter()
            try:
                conn.send(request)
            except OSError:
                raise self._down_if(generation, self._death("sending a request")) from None
        reply = self._receive(conn, generation, ticket, limit, request)
        if isinstance(reply, Failed):
            with self._stats_lock:
                self.errors_in_a_row += 1
                errors = self.errors_in_a_row
            message = reply.message[:MESSAGE_MAX]
            if errors >= ERRORS_BEFORE_RESTART:
                raise self._down_if(generation, f"{errors} errors in a row: {message}")
            raise RequestError(message)
        busy = getattr(reply, "busy_s", None)
        with self._stats_lock:
            self.errors_in_a_row = 0
            if busy is not None:
                if not queued:
                    self._hops.append(time.perf_counter() - sent - busy)
                self._work.append(Work(time.monotonic(), busy, isinstance(reply, Detected)))
                self.call_s = busy if not self.call_s else (
                    self.call_s + CALL_AVERAGE * (busy - self.call_s))
        return reply

    def _receive(
        self, conn: Connection, generation: int, ticket: int, limit: float, request: Request
    ) -> Reply:
        """Wait for this ticket's turn, then for its reply; each wait within ``limit``."""
        with self._turn:
            deadline = time.monotonic() + limit * (ticket - self._received + 1)
            while self._received != ticket:
                if self.generation != generation or self.state is not ProcessState.UP:
                    raise ProcessDownError(self.reason or "restarted")
                if time.monotonic() > deadline:
                    raise self._down_if(generation, f"no answer within {limit:g} s (hung); "
                                        "killed")
                self._turn.wait(0.05)
            try:
                if self.generation != generation:
                    raise ProcessDownError(self.reason or "restarted")
                try:
                    if not _readable(conn, limit):
                        raise self._down_if(generation, f"no answer within {limit:g} s (hung); "
                                            "killed")
                    reply: Reply = conn.recv()
                except (EOFError, OSError):
                    raise self._down_if(generation, self._death(
                        f"running {type(request).__name__}")) from None
                return reply
            finally:
                self._received += 1
                self._turn.notify_all()

    def _down_if(self, generation: int, reason: str) -> ProcessDownError:
        """The process of ``generation`` is gone: mark it down and end it, unless a newer
        one runs (then this is an echo of a loss already handled)."""
        with self._state_lock:
            if self.generation != generation or self.state is not ProcessState.UP:
                return ProcessDownError(self.reason or reason)
            self.state, self.reason = ProcessState.DOWN, reason
            proc, conn, self._conn = self.proc, self._conn, None
        _end(proc, conn)  # this generation's, even if a new one is spawned meanwhile
        return ProcessDownError(reason)

    def detect(self, lane: int) -> Detected:
        reply = self.call(Detect(lane))
        assert isinstance(reply, Detected)
        return reply

    def classify(self, lane: int, count: int, models: tuple[int, ...] = (0,)) -> Classified:
        reply = self.call(Classify(lane, count, models))
        assert isinstance(reply, Classified)
        return reply

    def measure_bound(self, seconds: float, share: float) -> Bound:
        reply = self.call(MeasureBound(seconds, share), timeout=seconds + self.timeout)
        assert isinstance(reply, Bound)
        return reply


def _readable(conn: Connection, timeout: float) -> bool:
    """``conn.poll(timeout)`` in one system call: Connection.poll builds a selector for
    every call, a cost paid on every frame. A closed or broken socket is readable (its
    recv raises)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000.0))


def _end(proc: subprocess.Popen[bytes] | None, conn: Connection | None) -> None:
    """Kill a process (if it still runs) and close its socket."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(5)
    if conn is not None:
        conn.close()
