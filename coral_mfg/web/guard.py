"""What keeps the web server's sockets bounded, whatever a peer on the network does.

Every connection passes through :class:`ConnectionGuard` before the HTTP
server sees it: beyond the cap it gets a 503 and is closed at once; a
connection whose request headers are not complete within the header deadline
is closed (an idle socket, or one that sends its headers a byte at a time);
between requests, the HTTP server's keep-alive timeout closes it. The cap is
also held below the process's open-file limit, with a reserve, so that peers
can never take the descriptors the recording, the snapshots and the event
log need.

The event loop's own complaints (``accept()`` out of resources) are counted
and logged once a minute, never once per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: Descriptors the application keeps for itself beyond those open when the server starts.
FD_RESERVE = 128
#: How often a repeated complaint is logged again (with how many there were).
REPEAT_LOG_S = 60.0
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 35\r\nRetry-After: 5\r\nConnection: close\r\n\r\n"
        b"503: too many connections, retry.\r\n")


def raise_open_file_limit() -> tuple[int, int]:
    """Lift the soft limit on open files to the hard one (allowed to any process), so a
    default of 1024 does not cap a station that the system allows more; (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            log.debug("open-file limit stays at %d", soft)
    return soft, hard


def open_files() -> int:
    """Descriptors this process has open now (Linux); a guess elsewhere."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


def connection_cap(wanted: int, backlog: int) -> int:
    """``wanted``, lowered when the open-file limit would not leave :data:`FD_RESERVE`
    descriptors to the application's own files besides every connection, and besides
    the ``backlog`` connections the event loop accepts at once before it refuses any."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = soft - open_files() - FD_RESERVE - backlog
    cap = max(1, min(wanted, room))
    if cap < wanted:
        log.warning("web view: the open-file limit (%d) leaves room for %d connections, not "
                    "%d; raise it (LimitNOFILE= in the service unit, ulimit -n)", soft, cap,
                    wanted)
    return cap


@dataclass
class GuardCounts:
    """What the guard did, for the status and the metrics."""

    open: int = 0
    refused: int = 0  # over the cap: 503 and closed
    header_timeouts: int = 0  # closed for not sending a request in time


@dataclass
class ConnectionGuard:
    """A protocol factory around the HTTP server's: see the module's docstring."""

    factory: Callable[[], asyncio.Protocol]
    max_connections: int
    header_s: float
    loop: asyncio.AbstractEventLoop
    counts: GuardCounts = field(default_factory=GuardCounts)

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self)


class _Guarded(asyncio.Protocol):
    """One connection: counted, held to the header deadline, then handed on whole."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        g = self.guard
        if g.counts.open >= g.max_connections:
            g.counts.refused += 1
            transport.write(BUSY)
            transport.close()
            return
        g.counts.open += 1
        self.timer = g.loop.call_later(g.header_s, self._too_slow)
        self.inner = g.factory()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if self.timer is not None:
            seen = self.tail + data
            if b"\r\n\r\n" in seen:
                self.timer.cancel()
                self.timer = None
            else:
                self.tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        inner, self.inner = self.inner, None
        if inner is not None:
            self.guard.counts.open -= 1
            inner.connection_lost(exc)

    def _too_slow(self) -> None:
        self.timer = None
        self.guard.counts.header_timeouts += 1
        if self.transport is not None:
            self.transport.abort()


class Repeats:
    """Counts one kind of complaint; logs the first, then at most once per
    :data:`REPEAT_LOG_S` with how many came meanwhile."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self._logged_at = -REPEAT_LOG_S
        self._logged_count = 0

    def __call__(self, detail: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._logged_at < REPEAT_LOG_S:
            return
        extra = self.count - self._logged_count - 1
        more = f" ({extra} more since the last report, {self.count} in all)" if extra else ""
        log.warning("web view: %s: %s%s", self.what, detail, more)
        self._logged_at, self._logged_count = now, self.count


def loop_exception_handler(accept: Repeats) -> Callable[[asyncio.AbstractEventLoop,
                                                          dict[str, Any]], None]:
    """The event loop's handler: accept() failures counted (``accept``), the rest logged
    as asyncio would."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        exc = context.get("exception")
        if "accept" in message:
            reason = getattr(exc, "strerror", None) or str(exc or message)
            accept(f"cannot accept connections ({reason})")
            return
        loop.default_exception_handler(context)

    return handle


class BadRequests(logging.Filter):
    """aiohttp logs a traceback for each malformed request (an oversized header, a
    broken request line): anyone on the network could fill the log with them. They
    become one counted line a minute."""

    def __init__(self) -> None:
        super().__init__()
        self.repeats = Repeats("malformed requests refused (400)")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Error handling request"):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        self.repeats(_first_line(exc) if exc is not None else record.getMessage())
        return False


def _first_line(exc: BaseException) -> str:
    """The kind of fault only: the parser's message may quote the request, token included."""
    return f"{type(exc).__name__} from a client"
