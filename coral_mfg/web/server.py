"""The HTTP server: the live page, MJPEG panes, events, status, health and metrics.

It runs aiohttp on a thread and an event loop of its own, so nothing it does
can hold up inspection: pictures are encoded by the hub on its own thread,
at most ``MAX_VIEW_FPS`` per stream, and a viewer that cannot take a frame
within ``WRITE_TIMEOUT_S`` is dropped (and counted). No endpoint writes
anything. Away from loopback a token is required, as a bearer header or as
the cookie the login form sets.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coral_mfg.errors import UserError
from coral_mfg.results import STREAMS
from coral_mfg.web.hub import WebHub
from coral_mfg.web.page import LOGIN_PAGE, PAGE

if TYPE_CHECKING:
    from coral_mfg.pipeline import Pipeline

log = logging.getLogger(__name__)

MAX_VIEW_FPS = 10.0
WRITE_TIMEOUT_S = 5.0
POLL_S = 0.05
EVENTS_POLL_S = 0.25
START_TIMEOUT_S = 10.0
COOKIE = "coral_mfg_token"
ENV_TOKEN = "CORAL_MFG_HTTP_TOKEN"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (loopback) or ``[v6]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebServer:
    """Serves one run; started before the run, stopped before it is closed."""

    def __init__(self, bind: str, token: str | None, hub: WebHub, pipeline: Pipeline,
                 snapshots: Path | None) -> None:
        self.host, self.port = parse_bind(bind)
        self.token = token or os.environ.get(ENV_TOKEN) or None
        if self.token is None and not is_loopback(self.host):
            raise UserError(f"--http {bind} is reachable from other machines: set a token "
                            f"(http_token in the config, or ${ENV_TOKEN}), or bind to "
                            "127.0.0.1")
        self.hub = hub
        self.pipeline = pipeline
        self.snapshots = snapshots
        self.viewers = 0
        self.dropped_viewers = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._started: asyncio.Future[None] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False

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
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            self._loop.run_until_complete(site.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
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
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else request.cookies.get(COOKIE, "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given = str(form.get("token", ""))
        if self.token is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return web.Response(status=401, text=LOGIN_PAGE, content_type="text/html")
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, given, httponly=True, samesite="Strict")
        return response

    async def _page(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(text=PAGE, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def _video(self, request: web.Request) -> web.StreamResponse:
        stream = request.match_info["stream"]
        if stream not in STREAMS:
            raise web.HTTPNotFound()
        response = web.StreamResponse(headers={
            "Content-Type": "multipart/x-mixed-replace; boundary=frame",
            "Cache-Control": "no-store"})
        await response.prepare(request)
        self.viewers += 1
        try:
            await self._send_frames(stream, response)
        except (TimeoutError, ConnectionResetError):
            self.dropped_viewers += 1
            log.info("web: a slow or gone viewer of %s was dropped", stream)
        finally:
            self.viewers -= 1
        return response

    async def _send_frames(self, stream: str, response: web.StreamResponse) -> None:
        shown = -1
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if self.hub.latest_seq(stream) == shown:
                await asyncio.sleep(POLL_S)
                continue
            picture = await loop.run_in_executor(self.hub.encoder, self.hub.picture, stream)
            if picture is None:
                await asyncio.sleep(POLL_S)
                continue
            part = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                    + str(len(picture.jpeg)).encode() + b"\r\n\r\n" + picture.jpeg + b"\r\n")
            await asyncio.wait_for(response.write(part), WRITE_TIMEOUT_S)
            shown = picture.seq
            await asyncio.sleep(1.0 / MAX_VIEW_FPS)

    def status(self) -> dict[str, Any]:
        p = self.pipeline
        return {
            "streams": {s: p.stream_state(s, self.hub.fps(s)) for s in STREAMS},
            "accelerator": {"device": p.device, "status": p.inference.pool.status(),
                            "fallback": p.inference.pool.fallen_back},
            "zones": [{"name": z.name, "enabled": z.enabled, "mode": z.mode}
                      for z in p.zone_store.zones],
            "in_zone": [{"zone": z, "track": t} for z, t in p.safety.debounce.active_pairs()],
            "violations": p.safety.violations,
            "counts": p.inspection.counts(),
            "warning": p.output_warning() or p.zone_warning(),
            "viewers": self.viewers,
        }

    async def _status(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(self.status())

    async def _events(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response([e for _, e in self.hub.events_after(0)])

    async def _event_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        seen = 0
        try:
            while not self._stopping:
                for n, event in self.hub.events_after(seen):
                    data = f"data: {json.dumps(event, separators=(',', ':'))}\n\n"
                    await asyncio.wait_for(response.write(data.encode()), WRITE_TIMEOUT_S)
                    seen = n
                await asyncio.sleep(EVENTS_POLL_S)
        except (TimeoutError, ConnectionResetError):
            self.dropped_viewers += 1
        return response

    async def _health(self, _request: web.Request) -> web.StreamResponse:
        p = self.pipeline
        problems = {s: p.status(s) for s in STREAMS if p.status(s)}
        accel = p.inference.pool.status()
        body = {"status": "ok" if not problems and not accel else "unhealthy",
                "streams": {s: p.status(s) or "live" for s in STREAMS},
                "accelerator": accel or "ok", "device": p.device}
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def _metrics(self, _request: web.Request) -> web.StreamResponse:
        data = generate_latest(self.hub.metrics.registry)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        """Only a plain file name of the snapshot folder: no path reaches anywhere else."""
        name = request.match_info["name"]
        if self.snapshots is None or "/" in name or "\\" in name or name.startswith(".") \
                or not name.endswith(".jpg"):
            raise web.HTTPNotFound()
        path = (self.snapshots / name).resolve()
        if path.parent != self.snapshots.resolve() or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})
