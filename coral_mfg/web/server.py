"""The HTTP server: the live page, MJPEG panes, events, status, health and metrics.

It runs aiohttp on a thread and an event loop of its own, so nothing it does
can hold up inspection: pictures are encoded by the hub on its own thread,
at most ``MAX_VIEW_FPS`` per stream, and a viewer that cannot take a frame
within ``WRITE_TIMEOUT_S`` is dropped (and counted). Connections are capped
and held to deadlines (:mod:`coral_mfg.web.guard`); live viewers (video and
event streams) have a cap of their own. No endpoint writes anything. Away
from loopback a token is required, as a bearer header or as the cookie the
login form sets.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coral_mfg.config.validators import is_loopback, parse_bind
from coral_mfg.core.errors import UserError
from coral_mfg.core.status import (
    OutputStatus,
    device_record,
    line_record,
    presence_record,
    stream_record,
)
from coral_mfg.runtime.status import StatusBoard
from coral_mfg.web.guard import (
    BadRequests,
    ConnectionGuard,
    Repeats,
    connection_cap,
    loop_exception_handler,
)
from coral_mfg.web.hub import WebHub, yield_to_inspection
from coral_mfg.web.page import LOGIN_PAGE, page

log = logging.getLogger(__name__)

MAX_VIEW_FPS = 10.0
WRITE_TIMEOUT_S = 5.0
#: How often a live viewer looks for a new frame, and for new events.
FRAME_LOOK_S = 0.05
EVENTS_LOOK_S = 0.25
START_TIMEOUT_S = 10.0
#: A request's headers must be complete this long after the connection opened.
HEADER_TIMEOUT_S = 5.0
#: A connection idle between requests is closed after this long.
KEEPALIVE_S = 15.0
#: The login form's body must arrive within this long.
BODY_TIMEOUT_S = 10.0
#: Connections waiting to be accepted; the event loop also accepts this many at once.
BACKLOG = 32
COOKIE = "coral_mfg_token"
ENV_TOKEN = "CORAL_MFG_HTTP_TOKEN"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebServer:
    """Serves one run; started before the run, stopped before it is closed."""

    def __init__(self, bind: str, token: str | None, hub: WebHub, board: StatusBoard,
                 snapshots: Path | None, *, max_connections: int = 64,
                 max_viewers: int = 8) -> None:
        self.host, self.port = parse_bind(bind)
        self.token = token or os.environ.get(ENV_TOKEN) or None
        if self.token is None and not is_loopback(self.host):
            raise UserError(f"--http {bind} is reachable from other machines: set a token "
                            f"(http_token in the config, or ${ENV_TOKEN}), or bind to "
                            "127.0.0.1")
        self.hub = hub
        self.board = board
        self.snapshots = snapshots
        self.max_connections = max_connections
        self.max_viewers = max_viewers
        self.viewers = 0
        self.dropped_viewers = 0  # slow viewers closed by the server
        self.refused_viewers = 0  # over the viewer cap
        self.accept_errors = Repeats("accept() failed")
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(loop_exception_handler(self.accept_errors))
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.guard: ConnectionGuard | None = None
        self._stopping = False
        _quiet_bad_requests()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Listen, or fail in one line (a port in use, an address not on this machine)."""
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise UserError(f"the web server did not start on {self.host}:{self.port}")
        if self._error is not None:
            reason = getattr(self._error, "strerror", None) or str(self._error)
            raise UserError(f"cannot listen on {self.host}:{self.port} ({reason}); pass "
                            "another --http HOST:PORT")
        log.info("web view on http://%s:%d/%s", self.host, self.port,
                 " (token required)" if self.token else "")

    def _serve(self) -> None:
        yield_to_inspection()
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False,
                                         keepalive_timeout=KEEPALIVE_S)
            self._loop.run_until_complete(self._runner.setup())
            server = self._runner.server
            assert server is not None
            self.guard = ConnectionGuard(server, connection_cap(self.max_connections, BACKLOG),
                                         HEADER_TIMEOUT_S, self._loop)
            self._listener = self._loop.run_until_complete(self._loop.create_server(
                self.guard, self.host, self.port, backlog=BACKLOG, reuse_address=True))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._listener.close()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self, timeout: float = 3.0) -> None:
        self._stopping = True
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    # --- the application -----------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self._page)
        app.router.add_post("/login", self._login)
        app.router.add_get("/video/{stream}.mjpg", self._video)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/events/stream", self._event_stream)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/snapshots/{name}", self._snapshot)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is None or request.path == "/login" or self._authorized(request):
            return await handler(request)
        if request.path == "/" and request.method == "GET":
            return web.Response(status=401, text=LOGIN_PAGE, content_type="text/html")
        return web.Response(status=401, text="401: a token is required\n")

    def _authorized(self, request: web.Request) -> bool:
        assert self.token is not None
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        given = (credentials.strip() if scheme.lower() == "bearer"
                 else request.cookies.get(COOKIE, ""))
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def _login(self, request: web.Request) -> web.StreamResponse:
        try:
            form = await asyncio.wait_for(request.post(), BODY_TIMEOUT_S)
        except TimeoutError:
            return _closing(web.Response(status=408, text="408: the form did not arrive\n"))
        given = str(form.get("token", ""))
        if self.token is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return web.Response(status=401, text=LOGIN_PAGE, content_type="text/html")
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, given, httponly=True, samesite="Strict")
        return response

    async def _page(self, _request: web.Request) -> web.StreamResponse:
        cameras = tuple(s.name for s in self.board.current.streams)
        return web.Response(text=page(cameras), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def _video(self, request: web.Request) -> web.StreamResponse:
        stream = request.match_info["stream"]
        if stream not in {s.name for s in self.board.current.streams}:
            raise web.HTTPNotFound()
        return await self._live(request, "multipart/x-mixed-replace; boundary=frame",
                                lambda response: self._send_frames(stream, request, response),
                                f"video of {stream}")

    async def _live(self, request: web.Request, content_type: str,
                    send: Callable[[web.StreamResponse], Awaitable[None]],
                    what: str) -> web.StreamResponse:
        """A response that lasts as long as its viewer: capped, and dropped when the
        viewer stops reading (its socket is closed, not left to drain for ever)."""
        if self.viewers >= self.max_viewers:
            self.refused_viewers += 1
            return _closing(web.Response(
                status=503, text=f"503: {self.max_viewers} viewers already; retry later\n",
                headers={"Retry-After": "10"}))
        response = web.StreamResponse(headers={"Content-Type": content_type,
                                               "Cache-Control": "no-store"})
        self.viewers += 1
        try:
            await response.prepare(request)
            await send(response)
        except TimeoutError:
            self.dropped_viewers += 1
            log.info("web: a viewer of the %s stopped reading and was dropped", what)
            if request.transport is not None:
                request.transport.abort()
        except ConnectionError:
            log.debug("web: a viewer of the %s left", what)
        finally:
            self.viewers -= 1
        return response

    async def _send_frames(self, stream: str, request: web.Request,
                           response: web.StreamResponse) -> None:
        shown = -1
        loop = asyncio.get_running_loop()
        while not self._stopping and not _gone(request):
            if self.hub.latest_seq(stream) == shown:
                await asyncio.sleep(FRAME_LOOK_S)
                continue
            picture = await loop.run_in_executor(self.hub.encoder, self.hub.picture, stream)
            if picture is None:
                await asyncio.sleep(FRAME_LOOK_S)
                continue
            part = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                    + str(len(picture.jpeg)).encode() + b"\r\n\r\n" + picture.jpeg + b"\r\n")
            await asyncio.wait_for(response.write(part), WRITE_TIMEOUT_S)
            shown = picture.seq
            await asyncio.sleep(1.0 / MAX_VIEW_FPS)

    def status(self) -> dict[str, Any]:
        """``/api/status``: the run's status, as the page shows it."""
        s = self.board.current
        return {
            "streams": {stream.name: {
                **stream_record(s, stream),
                "blind": stream.blind,
                "zones": [{"name": z.name, "enabled": z.enabled, "mode": z.mode,
                           "people": stream.occupancy(z.name),
                           "dwell_alarm": any(o.zone == z.name for o in stream.dwelling)}
                          for z in stream.zones],
                "in_zone": [{"zone": o.zone, "track": o.track} for o in stream.occupants],
                "violations": stream.violations,
                "counts": dict(stream.inspected),
                "lines": {line.name: line_record(line) for line in stream.lines},
                "presence": {c.name: presence_record(stream, c) for c in stream.presence},
            } for stream in s.streams},
            "accelerator": {"device": s.accelerator.device, "status": s.accelerator.down,
                            "fallback": s.accelerator.fallback,
                            "processes": [device_record(d) for d in s.accelerator.devices]},
            "violations": s.violations,
            "counts": s.inspected,
            "warning": s.output_warning or s.zone_error,
            "viewers": self.viewers,
            "connections": self.connection_counts(),
        }

    def connection_counts(self) -> dict[str, int]:
        g = self.guard.counts if self.guard is not None else None
        return {"open": g.open if g else 0, "refused": g.refused if g else 0,
                "header_timeouts": g.header_timeouts if g else 0,
                "viewers_dropped": self.dropped_viewers,
                "viewers_refused": self.refused_viewers,
                "accept_errors": self.accept_errors.count}

    async def _status(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(self.status())

    async def _events(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response([e for _, e in self.hub.events_after(0)])

    async def _event_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._live(request, "text/event-stream",
                                lambda response: self._send_events(request, response), "events")

    async def _send_events(self, request: web.Request, response: web.StreamResponse) -> None:
        seen = 0
        while not self._stopping and not _gone(request):
            for n, event in self.hub.events_after(seen):
                data = f"data: {json.dumps(event, separators=(',', ':'))}\n\n"
                await asyncio.wait_for(response.write(data.encode()), WRITE_TIMEOUT_S)
                seen = n
            await asyncio.sleep(EVENTS_LOOK_S)

    async def _health(self, _request: web.Request) -> web.StreamResponse:
        s = self.board.current
        body = {"status": "ok" if s.healthy else "unhealthy",
                "streams": {stream.name: stream.reason or "live" for stream in s.streams},
                "accelerator": s.accelerator.down or "ok", "device": s.accelerator.device,
                "outputs": {o.name: _output_health(o) for o in s.outputs}}
        return web.json_response(body, status=200 if s.healthy else 503)

    async def _metrics(self, _request: web.Request) -> web.StreamResponse:
        data = generate_latest(self.hub.metrics.registry)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        """Only a plain file name of the snapshot folder: no path reaches anywhere else."""
        name = request.match_info["name"]
        if self.snapshots is None or "/" in name or "\\" in name or name.startswith(".") \
                or not name.endswith(".jpg") or not name.isprintable():
            raise web.HTTPNotFound()
        path = (self.snapshots / name).resolve()
        if path.parent != self.snapshots.resolve() or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})


def _output_health(output: OutputStatus) -> dict[str, Any]:
    """An output in ``/healthz``: its fault now (None when it writes), and for a PLC
    server whether it listens and how many client requests failed."""
    out: dict[str, Any] = {"error": output.get("error")}
    for key in ("listening", "client_errors"):
        if output.get(key) is not None:
            out[key] = output.get(key)
    return out


def _gone(request: web.Request) -> bool:
    """The viewer closed its connection (a live response notices only when it writes)."""
    return request.transport is None or request.transport.is_closing()


def _closing(response: web.Response) -> web.Response:
    """A response after which the connection is closed."""
    response.force_close()
    return response


_BAD_REQUESTS = BadRequests()


def _quiet_bad_requests() -> None:
    """Malformed requests: counted lines, not a traceback each (idempotent)."""
    logger = logging.getLogger("aiohttp.server")
    if _BAD_REQUESTS not in logger.filters:
        logger.addFilter(_BAD_REQUESTS)
