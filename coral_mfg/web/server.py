"""The HTTP server: the live page, MJPEG panes, events, status, health and metrics.

It runs aiohttp on a thread and an event loop of its own, so nothing it does
can hold up inspection: pictures are encoded by the hub on its own thread,
at most ``MAX_VIEW_FPS`` per stream, and a viewer that cannot take a frame
within ``WRITE_TIMEOUT_S`` is dropped (and counted). Connections are capped
and held to deadlines (:mod:`coral_mfg.web.guard`); live viewers (video and
event streams) have a cap of their own; history queries run one at a time on a
thread of their own, within bounds, and few may wait. Away from loopback a token is
required, as a bearer header or as the cookie the login form sets.

One endpoint writes: ``PUT /api/cameras/NAME/zones`` changes a camera's zones, lines
and presence regions (see :mod:`coral_mfg.runtime.shape_edit`). It takes the admin
token only (``http_admin_token``), never the viewer's, even on loopback; a request
from another origin is refused, and a browser session must also send the session's
own CSRF token, which only the station's own pages know.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coral_mfg.config.validators import is_loopback, parse_bind
from coral_mfg.config.zone_file import shapes_from_json
from coral_mfg.core.errors import ConfigError, UserError
from coral_mfg.core.status import (
    OutputStatus,
    device_record,
    line_record,
    presence_record,
    stream_record,
)
from coral_mfg.core.threads import yield_to_inspection
from coral_mfg.outputs.history_db import open_reader
from coral_mfg.outputs.history_report import (
    SNAPSHOT_FILTERS,
    SNAPSHOT_LIMIT,
    WEB_DEADLINE_S,
    WEB_MAX_ROWS,
    WHEN,
    Query,
    Report,
    as_csv,
    as_json,
    parse_when,
    report,
    snapshot_events,
    web_query,
)
from coral_mfg.outputs.panel import alarms_of, health_of
from coral_mfg.outputs.plc import try_bind
from coral_mfg.runtime.shape_edit import EditNotAllowedError, ShapeEditor
from coral_mfg.runtime.status import StatusBoard
from coral_mfg.web.guard import (
    BadRequests,
    ConnectionGuard,
    Repeats,
    connection_cap,
    loop_exception_handler,
)
from coral_mfg.web.hub import WebHub
from coral_mfg.web.page import LOGIN_PAGE, page
from coral_mfg.web.zone_page import editor_page, sign_in_page

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
#: History queries waiting or running at once; more get 503.
HISTORY_QUERIES = 2
COOKIE = "coral_mfg_token"
ENV_TOKEN = "CORAL_MFG_HTTP_TOKEN"
#: An admin's browser session: a random id, never the token itself.
ADMIN_COOKIE = "coral_mfg_admin"
ENV_ADMIN_TOKEN = "CORAL_MFG_HTTP_ADMIN_TOKEN"
#: The header a browser session's writes carry its CSRF token in.
CSRF_HEADER = "X-CSRF-Token"
#: An admin's browser session lasts this long; at most this many at once (the oldest go).
SESSION_S = 12 * 3600.0
MAX_SESSIONS = 32
#: The largest request body taken (a camera's shapes are a few kilobytes).
MAX_BODY = 64 * 1024
ADMIN, VIEWER = "admin", "viewer"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def checked_tokens(bind: str, token: str | None, admin_token: str | None
                   ) -> tuple[str | None, str | None]:
    """The viewer and admin tokens, given or from the environment; one line refusing a
    bind beyond this machine without a viewer token, or one token for both roles."""
    host, _ = parse_bind(bind)
    token = token or os.environ.get(ENV_TOKEN) or None
    admin_token = admin_token or os.environ.get(ENV_ADMIN_TOKEN) or None
    if admin_token is not None and token is not None and hmac.compare_digest(
            admin_token.encode(), token.encode()):
        raise UserError("the admin token (http_admin_token) is the viewer token "
                        "(http_token): give admins a token of their own")
    if token is None and not is_loopback(host):
        raise UserError(f"--http {bind} is reachable from other machines: set a token "
                        f"(http_token in the config, or ${ENV_TOKEN}), or bind to "
                        "127.0.0.1")
    return token, admin_token


def preflight(bind: str, token: str | None, admin_token: str | None) -> None:
    """What would stop the web view, checked before the models load: its tokens, and
    whether its port can be had now."""
    checked_tokens(bind, token, admin_token)
    host, port = parse_bind(bind)
    try:
        try_bind(host, port)
    except OSError as exc:
        raise _cannot_listen(host, port, exc) from None


def _cannot_listen(host: str, port: int, error: BaseException) -> UserError:
    reason = getattr(error, "strerror", None) or str(error)
    return UserError(f"cannot listen on {host}:{port} ({reason}); pass another "
                     "--http HOST:PORT")


@dataclass(frozen=True)
class _Session:
    """An admin signed in from a browser: the CSRF token its pages send, and its end."""

    csrf: str
    ends: float


class WebServer:
    """Serves one run; started before the run, stopped before it is closed."""

    def __init__(self, bind: str, token: str | None, hub: WebHub, board: StatusBoard,
                 snapshots: Path | None, *, max_connections: int = 64,
                 max_viewers: int = 8, history: Path | None = None,
                 shifts: tuple[str, ...] = (), admin_token: str | None = None,
                 editor: ShapeEditor | None = None) -> None:
        self.host, self.port = parse_bind(bind)
        self.token, self.admin_token = checked_tokens(bind, token, admin_token)
        self.editor = editor
        self.sessions: dict[str, _Session] = {}
        self._zones = ThreadPoolExecutor(1, thread_name_prefix="web-zones")
        self.hub = hub
        self.board = board
        self.snapshots = snapshots
        self.history = history
        self.shifts = shifts
        self.history_queries = 0
        self._counter = ThreadPoolExecutor(1, thread_name_prefix="web-history",
                                           initializer=yield_to_inspection)
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
            raise _cannot_listen(self.host, self.port, self._error)
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
        self._counter.shutdown(wait=False, cancel_futures=True)
        self._zones.shutdown(wait=False, cancel_futures=True)

    # --- the application -----------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=MAX_BODY)
        app.router.add_get("/", self._page)
        app.router.add_get("/cameras/{camera}/zones", self._zone_page)
        app.router.add_get("/api/cameras/{camera}/zones", self._get_zones)
        app.router.add_put("/api/cameras/{camera}/zones", self._put_zones)
        app.router.add_post("/login", self._login)
        app.router.add_get("/video/{stream}.mjpg", self._video)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/events/stream", self._event_stream)
        app.router.add_get("/api/history", self._history)
        app.router.add_get("/api/snapshots", self._snapshots)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/snapshots/{name}", self._snapshot)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        role = self._role(request)
        request["role"] = role
        if role is not None or request.path == "/login":
            return await handler(request)
        if request.path == "/" and request.method == "GET":
            return web.Response(status=401, text=LOGIN_PAGE, content_type="text/html")
        if request.method == "GET" and request.path.startswith("/cameras/"):
            return web.Response(status=401, text=sign_in_page(request.path, None),
                                content_type="text/html")
        if request.path.startswith("/api/"):
            return _error(401, "a token is required: send Authorization: Bearer <token>, or "
                          "sign in again (a sign-in ends when the station restarts)")
        return web.Response(status=401, text="401: a token is required\n")

    def _role(self, request: web.Request) -> str | None:
        """``admin``, ``viewer``, or None (not allowed in). Without a viewer token (on
        loopback) anyone may view; only the admin token, or an admin's session, is an
        admin."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = credentials.strip().encode()
            if self.admin_token is not None and hmac.compare_digest(
                    given, self.admin_token.encode()):
                return ADMIN
            if self.token is not None and hmac.compare_digest(given, self.token.encode()):
                return VIEWER
            return VIEWER if self.token is None else None
        if self._session(request) is not None:
            return ADMIN
        if self.token is None:
            return VIEWER
        cookie = request.cookies.get(COOKIE, "")
        return VIEWER if hmac.compare_digest(cookie.encode(), self._viewer_cookie) else None

    @functools.cached_property
    def _viewer_cookie(self) -> bytes:
        """The sign-in cookie of a viewer: derived from the viewer token, never the token, so
        a cookie read off a shared PC does not give away what scripts and scrapers use; the
        same after a restart, so a wall screen stays signed in. A new token ends them all."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"coral-mfg viewer sign-in",
                        hashlib.sha256).hexdigest().encode()

    def _session(self, request: web.Request) -> _Session | None:
        """The admin session of the request's cookie, if it is one still open."""
        sid = request.cookies.get(ADMIN_COOKIE)
        if not sid or self.admin_token is None:
            return None
        session = self.sessions.get(sid)
        if session is None or session.ends < time.monotonic():
            return None
        return session

    def _open_session(self) -> str:
        now = time.monotonic()
        for sid in [k for k, v in self.sessions.items() if v.ends < now]:
            del self.sessions[sid]
        while len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[next(iter(self.sessions))]
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = _Session(secrets.token_urlsafe(32), now + SESSION_S)
        return sid

    async def _login(self, request: web.Request) -> web.StreamResponse:
        if not _same_origin(request, required=False):
            return _error(403, "the sign-in form was sent from another site")
        try:
            form = await asyncio.wait_for(request.post(), BODY_TIMEOUT_S)
        except TimeoutError:
            return _closing(web.Response(status=408, text="408: the form did not arrive\n"))
        given = str(form.get("token", "")).encode()
        after = _local_path(str(form.get("next", "/")))
        if self.admin_token is not None and hmac.compare_digest(
                given, self.admin_token.encode()):
            response = web.HTTPSeeOther(after)
            response.set_cookie(ADMIN_COOKIE, self._open_session(), httponly=True,
                                samesite="Strict", max_age=int(SESSION_S), path="/")
            log.info("web: an admin signed in from %s", request.remote)
            return response
        if self.token is None or not hmac.compare_digest(given, self.token.encode()):
            html = (LOGIN_PAGE if after == "/" else
                    sign_in_page(after, "that token is not the admin's"))
            return web.Response(status=401, text=html, content_type="text/html")
        response = web.HTTPSeeOther(after)
        response.set_cookie(COOKIE, self._viewer_cookie.decode(), httponly=True,
                            samesite="Strict")
        return response

    async def _page(self, _request: web.Request) -> web.StreamResponse:
        cameras = tuple(s.name for s in self.board.current.streams)
        return web.Response(text=page(cameras), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    # --- zones from the browser ----------------------------------------------------------

    def _editable(self, request: web.Request) -> str:
        camera = request.match_info["camera"]
        if self.editor is None or camera not in self.editor.cameras:
            if request.path.startswith("/api/"):
                raise web.HTTPNotFound(text=json.dumps({"error": f"no camera named {camera!r}"}),
                                       content_type="application/json")
            raise web.HTTPNotFound(text=f"404: no camera named {camera!r}\n")
        return camera

    async def _zone_page(self, request: web.Request) -> web.StreamResponse:
        """The zone editor of one camera: drawn over its live picture; read-only unless
        the viewer signed in as an admin."""
        camera = self._editable(request)
        session = self._session(request)
        nonce = secrets.token_urlsafe(16)
        body = editor_page(camera, session.csrf if session is not None else None,
                           admins=self.admin_token is not None, nonce=nonce)
        return web.Response(text=body, content_type="text/html",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": CSP.format(nonce=nonce),
                                     "X-Frame-Options": "DENY"})

    async def _get_zones(self, request: web.Request) -> web.StreamResponse:
        """A camera's zones, lines and presence regions in force, as JSON."""
        camera = self._editable(request)
        if not _same_origin(request, required=False):
            return _error(403, "refused: the request comes from another site")
        assert self.editor is not None
        body = self.editor.describe(camera) | {"admin": request["role"] == ADMIN}
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def _put_zones(self, request: web.Request) -> web.StreamResponse:
        """Replace a camera's zones (lines, presence regions: the kinds the body names),
        saved and put in force: admins only, from this site only."""
        camera = self._editable(request)
        assert self.editor is not None
        session = None if request.headers.get("Authorization") else self._session(request)
        refused = self._write_refused(request, session)
        if refused is not None:
            log.info("web: a change of the zones of %s from %s was refused: %s", camera,
                     request.remote, refused)
            return _error(403, refused)
        if request.content_type != "application/json":
            return _error(400, "the body must be JSON (Content-Type: application/json)")
        try:
            raw = await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
        except TimeoutError:
            return _closing(_error(408, "the body did not arrive"))
        except web.HTTPRequestEntityTooLarge:
            return _closing(_error(413, f"the body is larger than {MAX_BODY // 1024} KiB"))
        try:
            data = json.loads(raw, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            return _error(400, f"the body is not JSON: {_one_line(exc)}")
        by = f"admin token ({'browser session' if session else 'bearer'}, {request.remote})"
        editor = self.editor

        def change() -> tuple[str, ...]:
            shapes, kinds = shapes_from_json(data, editor.shapes(camera))
            return editor.replace(camera, shapes, kinds, by)

        try:
            changes = await asyncio.get_running_loop().run_in_executor(self._zones, change)
        except EditNotAllowedError as exc:
            return _error(409, _one_line(exc))
        except ConfigError as exc:
            return _error(422, _one_line(exc))
        except OSError as exc:
            log.warning("web: the zones of %s could not be saved: %s", camera, exc)
            return _error(500, f"the file could not be written ({exc.strerror or exc})")
        return web.json_response({"changes": list(changes), **editor.describe(camera),
                                  "admin": True}, headers={"Cache-Control": "no-store"})

    def _write_refused(self, request: web.Request, session: _Session | None) -> str | None:
        """Why this request may not change anything, or None when it may."""
        if not _same_origin(request, required=session is not None):
            return "refused: the request comes from another site"
        if self.admin_token is None:
            return (f"nobody may change zones here: no admin token is set (http_admin_token "
                    f"in the config, or ${ENV_ADMIN_TOKEN})")
        if request["role"] != ADMIN:
            return "changing zones needs the admin token; this one may only view"
        if session is not None:
            given = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode(), session.csrf.encode()):
                return f"refused: the {CSRF_HEADER} header is missing or not this session's"
        return None

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
        health = {stream.name: health_of(s, stream) for stream in s.streams}
        alarms = {stream.name: alarms_of(stream, None) for stream in s.streams}
        return {
            "station": s.station,
            "alarm": any(alarms.values()),
            "streams": {stream.name: {
                **stream_record(s, stream),
                "blind": stream.blind,
                "health": health[stream.name][0],
                "health_reason": health[stream.name][2],
                "alarms": alarms[stream.name],
                "passing": list(stream.passing),
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
            "shift": s.shift.record() if s.shift is not None else None,
            "warning": s.output_warning or s.zone_error or s.model_warning,
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

    async def _history(self, request: web.Request) -> web.StreamResponse:
        """Counts from the history per hour, shift or day, as ``coral-mfg report --format
        json`` gives them: the range and the rows bounded, one query at a time."""
        if self.history is None:
            return _error(404, "this station keeps no history (it has no event log and no "
                               "--history, or --no-history)")
        if len(request.query) != len(set(request.query)):
            return _error(400, "each parameter at most once")
        try:
            query = web_query(dict(request.query), time.time(), self.shifts)
        except ValueError as exc:
            return _error(400, str(exc))
        if self.history_queries >= HISTORY_QUERIES:
            return _closing(_error(503, "the history is busy with other questions; retry "
                                        "later", retry=5))
        self.history_queries += 1
        try:
            made = await asyncio.get_running_loop().run_in_executor(
                self._counter, self._count, query)
        except (TimeoutError, UserError) as exc:
            return _error(503, str(exc))
        finally:
            self.history_queries -= 1
        if request.query.get("format") == "csv":
            return web.Response(text=as_csv(made), content_type="text/csv",
                                headers={"Cache-Control": "no-store"})
        return web.json_response(as_json(made), headers={"Cache-Control": "no-store"})

    async def _snapshots(self, request: web.Request) -> web.StreamResponse:
        """The newest snapshots with what they show, for the gallery: filtered by camera,
        zone, grade or type and a time range; from the history when the station keeps
        one (every run), else from this run's recent events. Only files still on disk."""
        params = dict(request.query)
        if len(request.query) != len(set(request.query)):
            return _error(400, "each parameter at most once")
        unknown = sorted(set(params) - {*SNAPSHOT_FILTERS, "since", "until", "limit"})
        if unknown:
            return _error(400, f"unknown parameter '{unknown[0][:40]}'")
        if any(len(v) > 200 or not v.isprintable() for v in params.values()):
            return _error(400, "at most 200 printable characters per parameter")
        now = time.time()
        try:
            since = parse_when(params.pop("since", "24h"), now, self.shifts)
            until = parse_when(params.pop("until"), now, self.shifts) \
                if "until" in params else now + 1
            limit = min(SNAPSHOT_LIMIT, max(1, int(params.pop("limit", SNAPSHOT_LIMIT))))
        except (ValueError, OverflowError, OSError):
            return _error(400, f"since and until must be {WHEN}; limit a number")
        if self.snapshots is None:
            return web.json_response({"snapshots": []})
        if self.history is not None and self.history.is_file():
            if self.history_queries >= HISTORY_QUERIES:
                return _closing(_error(503, "the history is busy; retry later", retry=5))
            self.history_queries += 1
            try:
                found = await asyncio.get_running_loop().run_in_executor(
                    self._counter, self._find_snapshots, params, since, until, limit)
            except (TimeoutError, UserError, sqlite3.Error) as exc:
                return _error(503, str(exc))
            finally:
                self.history_queries -= 1
        else:
            found = [e for _, e in reversed(self.hub.events_after(0)) if e.get("snapshot")
                     and all(str(e.get("stream" if k == "camera" else k)) == v
                             for k, v in params.items())][:limit]
        folder = self.snapshots
        shown = [{**e, "snapshot": name} for e in found
                 if (name := Path(str(e["snapshot"])).name) and (folder / name).is_file()]
        return web.json_response({"snapshots": shown}, headers={"Cache-Control": "no-store"})

    def _find_snapshots(self, filters: dict[str, str], since: float, until: float,
                        limit: int) -> list[dict[str, Any]]:
        assert self.history is not None
        with contextlib.closing(open_reader(self.history)) as conn:
            return snapshot_events(conn, filters, since, until, limit=limit,
                                   deadline_s=WEB_DEADLINE_S)

    def _count(self, query: Query) -> Report:
        assert self.history is not None
        with contextlib.closing(open_reader(self.history)) as conn:
            return report(conn, query, max_rows=WEB_MAX_ROWS, deadline_s=WEB_DEADLINE_S)

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


#: The editor page runs its own script only, and talks to this server only.
CSP = ("default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
       "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")


def _same_origin(request: web.Request, *, required: bool) -> bool:
    """Whether the request's ``Origin`` is this server as the client reached it (its host
    and port; the scheme may differ behind a TLS proxy). Without an ``Origin`` (a script,
    not a browser): true unless ``required``."""
    origin = request.headers.get("Origin")
    if origin is None:
        return not required
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == request.host.lower()


def _local_path(path: str) -> str:
    """Where to go after signing in: a path of this server only, never another site."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path \
            or not path.isprintable():
        return "/"
    return path


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _gone(request: web.Request) -> bool:
    """The viewer closed its connection (a live response notices only when it writes)."""
    return request.transport is None or request.transport.is_closing()


def _error(status: int, message: str, retry: int | None = None) -> web.Response:
    """A JSON error in one line, for the API's callers."""
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)


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
