"""An OPC UA server for PLCs: the station's state as typed nodes, its alarms as events,
one method to reset the counts.

Under ``Objects``: ``CoralMfg/<station>/Health/{Ok, Heartbeat}`` and, per camera,
``CoralMfg/<station>/<camera>/{State, Fps, Blind, BlindReason, Zones/<zone>/{Occupancy,
Alarm, DwellAlarm, Entries}, Lines/<line>/<direction>, Presence/<check>/{Count, Missing},
Grades/<grade>, LastGrade, LastGradeIndex, LastGradePassed, Reject, Rejects}``; the node
ids are those of :mod:`coral_mfg.outputs.plc_map`. Keep-out entries, dwell alarms,
failed verdicts, presence changes, blind cameras and rejects are ``CoralMfgEventType``
events, emitted by the Server object.

Everything is read-only, for every user: writes, and adding or deleting nodes, are
refused. The one exception is ``CoralMfg/<station>/ResetCounts``, which only the admin
user may call (see :class:`~coral_mfg.outputs.plc_map.Baseline`).

Security: ``None`` only on loopback, where anyone on the machine may read; on any other
address Basic256Sha256 with SignAndEncrypt, the station's own certificate (made on first
start where the config says) and a user name and password or a trusted client
certificate for every session. A configuration that would serve the network without
them is refused at start-up, in one line.
"""

from __future__ import annotations

import contextvars
import datetime
import hmac
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.crypto import cert_gen, uacrypto
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.server.event_generator import EventGenerator
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from coral_mfg.config.settings import OpcuaConfig
from coral_mfg.config.validators import is_loopback, opcua_bind
from coral_mfg.core.errors import ConfigError
from coral_mfg.core.events import (
    CameraBlind,
    CameraRestored,
    Event,
    Graded,
    KeepoutEnter,
    PresenceMissing,
    PresenceRestored,
    ZoneDwellExceeded,
)
from coral_mfg.outputs.plc import PlcServer, Reject, quiet, try_bind
from coral_mfg.outputs.plc_map import (
    BOOLEAN,
    DOUBLE,
    INT32,
    NAMESPACE,
    NAMESPACE_INDEX,
    ROOT,
    STRING,
    UINT32,
    UINT64,
    Baseline,
    Point,
    StationLayout,
    string_id,
)

log = logging.getLogger(__name__)

ENV_PASSWORD = "CORAL_MFG_OPCUA_PASSWORD"
ENV_ADMIN_PASSWORD = "CORAL_MFG_OPCUA_ADMIN_PASSWORD"
CERT_DAYS = 3650
RESET_METHOD = "ResetCounts"
EVENT_TYPE = "CoralMfgEventType"
#: Names a camera may not have: the station's own nodes sit beside the cameras.
RESERVED = frozenset({"Health", RESET_METHOD})

VARIANTS = {BOOLEAN: ua.VariantType.Boolean, INT32: ua.VariantType.Int32,
            UINT32: ua.VariantType.UInt32, UINT64: ua.VariantType.UInt64,
            DOUBLE: ua.VariantType.Double, STRING: ua.VariantType.String}
#: The fields of every event besides the standard ones.
EVENT_FIELDS = (("Camera", ua.VariantType.String), ("Kind", ua.VariantType.String),
                ("Subject", ua.VariantType.String), ("Track", ua.VariantType.Int32),
                ("Grade", ua.VariantType.String), ("LatencyMs", ua.VariantType.Double))

#: The user of the request being handled: the permission check sees it, the reset method
#: reads it (both run in the connection's task, one request after the other).
_CALLER: contextvars.ContextVar[User | None] = contextvars.ContextVar("opcua_caller",
                                                                       default=None)


@dataclass(frozen=True)
class OpcuaPlan:
    """How the server is to run, checked: where, how secured, and who may log in."""

    url: str
    host: str
    port: int
    secure: bool
    certificate: Path | None
    private_key: Path | None
    users: dict[str, str]  # reader name -> password
    admins: dict[str, str]
    trusted: tuple[bytes, ...]  # DER of the trusted client certificates
    trusted_dir: Path | None
    anonymous: bool


def opcua_plan(config: OpcuaConfig, layout: StationLayout) -> OpcuaPlan:
    """The server's plan, or a one-line refusal naming what is missing and the fix."""
    assert config.opcua is not None
    url = config.opcua
    host, port = opcua_bind(url)
    loopback = is_loopback(host)
    security = config.opcua_security
    secure = security == "Basic256Sha256" or (security == "auto" and not loopback)
    where = f"--opcua {url}"
    if not loopback and not secure:
        raise ConfigError(f"{where}: security none is for loopback only; drop opcua_security "
                          "(Basic256Sha256 is the default off loopback) or listen on "
                          "127.0.0.1")
    users = _pair(config.opcua_username, config.opcua_password, ENV_PASSWORD,
                  "opcua_username", "opcua_password")
    admins = _pair(config.opcua_admin_username, config.opcua_admin_password,
                   ENV_ADMIN_PASSWORD, "opcua_admin_username", "opcua_admin_password")
    trusted = _trusted(config.opcua_trusted_certs)
    if secure and config.opcua_certificate is None:
        raise ConfigError(f"{where}: serving beyond this machine needs Basic256Sha256 with the "
                          "station's own certificate: set opcua_certificate (a path; it is made "
                          "there on first start) and opcua_username/opcua_password or "
                          "opcua_trusted_certs in the [opcua] table")
    if secure and not (users or admins or trusted):
        raise ConfigError(f"{where}: serving beyond this machine needs users: set "
                          "opcua_username and opcua_password, or opcua_trusted_certs (a "
                          "folder of client certificates), in the [opcua] table")
    for camera in layout.cameras:
        if camera.name in RESERVED:
            raise ConfigError(f"camera '{camera.name}': the name is taken by the station's "
                              "own OPC UA nodes; rename the camera")
    certificate = config.opcua_certificate if secure else None
    key = config.opcua_private_key or (
        certificate.with_suffix(".key.pem") if certificate is not None else None)
    return OpcuaPlan(url, host, port, secure, certificate, key if secure else None, users,
                     admins, trusted, config.opcua_trusted_certs, anonymous=not secure)


def _pair(user: str | None, password: str | None, env: str, user_key: str,
          password_key: str) -> dict[str, str]:
    password = password or os.environ.get(env) or None
    if user is None:
        return {}
    if not password:
        raise ConfigError(f"{user_key} '{user}' has no password: set {password_key} in the "
                          f"config's [opcua] table or ${env}")
    return {user: password}


def _trusted(folder: Path | None) -> tuple[bytes, ...]:
    if folder is None:
        return ()
    if not folder.is_dir():
        raise ConfigError(f"opcua_trusted_certs {folder} is not a folder: pass a folder of "
                          "client certificates (.der or .pem)")
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".der", ".pem", ".crt", ".cer"):
            continue
        try:
            data = path.read_bytes()
            cert = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----")
                    else x509.load_der_x509_certificate(data))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"opcua_trusted_certs: {path} is not a certificate ({exc}); "
                              "remove it or replace it with the client's certificate") from None
        found.append(cert.public_bytes(Encoding.DER))
    if not found:
        raise ConfigError(f"opcua_trusted_certs {folder} holds no certificate (.der or .pem)")
    return tuple(found)


def application_uri(station: str) -> str:
    return f"urn:coral-mfg:{quote(station, safe='')}"


def ensure_certificate(plan: OpcuaPlan, station: str) -> None:
    """The station's certificate and key, made if missing (the key readable by its owner
    only); a one-line refusal when they cannot be made or read."""
    cert, key = plan.certificate, plan.private_key
    if cert is None or key is None:
        return
    if cert.is_file() and key.is_file():
        return
    if cert.is_file() != key.is_file():
        present, absent = (cert, key) if cert.is_file() else (key, cert)
        raise ConfigError(f"opcua: {present} exists but {absent} does not; give both, or "
                          "neither (then both are made)")
    host = socket.gethostname()
    try:
        cert.parent.mkdir(parents=True, exist_ok=True)
        private = cert_gen.generate_private_key()
        made = cert_gen.generate_self_signed_app_certificate(
            private, f"coral-mfg {station}", {"organizationName": "coral-mfg"},
            [x509.UniformResourceIdentifier(application_uri(station)), x509.DNSName(host),
             x509.DNSName("localhost")],
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], CERT_DAYS)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert_gen.dump_private_key_as_pem(private))
        cert.write_bytes(made.public_bytes(Encoding.DER))
    except OSError as exc:
        raise ConfigError(f"opcua_certificate {cert}: cannot make the station's certificate "
                          f"there ({exc.strerror}); pass a writable path") from None
    log.info("opcua: made the station's certificate %s (key %s), valid %d days; give it to "
             "the PLCs to trust", cert, key, CERT_DAYS)


class _Users(UserManager):  # type: ignore[misc]
    """Who may open a session: the configured users (compared in constant time), holders of
    a trusted certificate, and on loopback without security anyone."""

    def __init__(self, plan: OpcuaPlan) -> None:
        self.plan = plan

    def get_user(self, iserver: Any, username: str | None = None,
                 password: str | None = None, certificate: Any = None) -> User | None:
        if username:
            for accounts, role in ((self.plan.admins, UserRole.Admin),
                                   (self.plan.users, UserRole.User)):
                known = accounts.get(username)
                if known is not None and hmac.compare_digest(
                        known.encode(), (password or "").encode()):
                    return User(role=role, name=username)
            return None
        if certificate and self.plan.trusted and bytes(certificate) in self.plan.trusted:
            return User(role=UserRole.User, name="certificate")
        return User(role=UserRole.User) if self.plan.anonymous else None


class _ReadOnly(SimpleRoleRuleset):  # type: ignore[misc]
    """Reading, browsing, subscribing and calling for every user; writing and changing the
    address space for none, the admin included. Notes the caller for the reset method."""

    _REFUSED = frozenset(ua.NodeId(i) for i in (
        ua.ObjectIds.WriteRequest_Encoding_DefaultBinary,
        ua.ObjectIds.HistoryUpdateRequest_Encoding_DefaultBinary,
        ua.ObjectIds.AddNodesRequest_Encoding_DefaultBinary,
        ua.ObjectIds.DeleteNodesRequest_Encoding_DefaultBinary,
        ua.ObjectIds.AddReferencesRequest_Encoding_DefaultBinary,
        ua.ObjectIds.DeleteReferencesRequest_Encoding_DefaultBinary,
        ua.ObjectIds.RegisterServerRequest_Encoding_DefaultBinary,
        ua.ObjectIds.RegisterServer2Request_Encoding_DefaultBinary))

    def check_validity(self, user: User, action_type_id: ua.NodeId, body: Any) -> bool:
        _CALLER.set(user)
        if action_type_id in self._REFUSED:
            return False
        role = UserRole.User if user.role == UserRole.Admin else user.role
        return bool(super().check_validity(User(role=role, name=user.name), action_type_id,
                                           body))


class OpcuaServer(PlcServer):
    """See the module's docstring."""

    kind = "opcua"
    per_client = ("asyncua.server.binary_server_asyncio", "asyncua.server.uaprocessor",
                  "asyncua.server.internal_session")

    def __init__(self, plan: OpcuaPlan, layout: StationLayout, baseline: Baseline) -> None:
        super().__init__(layout, baseline, plan.url)
        self.plan = plan
        self.baseline = baseline
        self.server: Server | None = None
        self.nodes: dict[str, ua.NodeId] = {}
        self.cameras: dict[str, ua.NodeId] = {}
        self.events_sent = 0
        self._events: EventGenerator | None = None
        quiet("asyncua", self.faults)

    def own_counts(self) -> dict[str, Any]:
        return {"events": self.events_sent, "resets": self.baseline.resets,
                "security": "Basic256Sha256" if self.plan.secure else "none"}

    async def open(self) -> None:
        plan = self.plan
        try_bind(plan.host, plan.port)  # before seconds of building the address space
        server = Server(user_manager=_Users(plan))
        self.server = server
        await server.init()
        server.set_endpoint(_endpoint(plan.host, plan.port))
        server.set_server_name(f"coral-mfg {self.layout.station}")
        await server.set_application_uri(application_uri(self.layout.station))
        index = await server.register_namespace(NAMESPACE)
        assert index == NAMESPACE_INDEX, f"namespace {index}: the map says {NAMESPACE_INDEX}"
        tokens: list[type] = []
        if plan.anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if plan.users or plan.admins or plan.anonymous:
            tokens.append(ua.UserNameIdentityToken)
        if plan.trusted:
            tokens.append(ua.X509IdentityToken)
        server.set_identity_tokens(tokens)
        if plan.secure:
            assert plan.certificate is not None and plan.private_key is not None
            await server.load_certificate(str(plan.certificate))
            await server.load_private_key(str(plan.private_key))
            server.set_security_policy(
                [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], _ReadOnly())
            if plan.trusted:
                server.set_certificate_validator(self._validate)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity], _ReadOnly())
        await self._address_space(server)
        await server.start()

    async def _validate(self, cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
        """With trusted certificates set, only their holders open a secure channel."""
        if uacrypto.der_from_x509(cert) not in self.plan.trusted:
            raise ua.uaerrors.BadCertificateUntrusted

    async def _address_space(self, server: Server) -> None:
        objects: dict[tuple[str, ...], Node] = {}

        async def folder(path: tuple[str, ...]) -> Node:
            if path not in objects:
                parent = server.nodes.objects if len(path) == 1 else await folder(path[:-1])
                objects[path] = await parent.add_object(
                    ua.NodeId(string_id(path), NAMESPACE_INDEX),
                    ua.QualifiedName(path[-1], NAMESPACE_INDEX))
            return objects[path]

        station = await folder((ROOT, self.layout.station))
        for camera in self.layout.cameras:
            self.cameras[camera.name] = (await folder((ROOT, self.layout.station,
                                                       camera.name))).nodeid
        first = self.state.values(0.0, 0.0)
        for point in self.points:
            parent = await folder(point.path[:-1])
            node = await parent.add_variable(
                ua.NodeId(string_id(point.path), NAMESPACE_INDEX),
                ua.QualifiedName(point.path[-1], NAMESPACE_INDEX),
                ua.Variant(first[point.name], VARIANTS[point.type]))
            self.nodes[point.name] = node.nodeid
        await station.add_method(
            ua.NodeId(string_id((ROOT, self.layout.station, RESET_METHOD)), NAMESPACE_INDEX),
            ua.QualifiedName(RESET_METHOD, NAMESPACE_INDEX), self._reset, [], [])
        kind = await server.create_custom_event_type(
            NAMESPACE_INDEX, EVENT_TYPE, ua.ObjectIds.BaseEventType, list(EVENT_FIELDS))
        self._events = await server.get_event_generator(kind, ua.ObjectIds.Server)

    async def _reset(self, _parent: ua.NodeId) -> ua.StatusCode | list[Any]:
        caller = _CALLER.get()
        if caller is None or caller.role != UserRole.Admin:
            log.warning("opcua: ResetCounts refused to %s: only the admin may reset counts",
                        getattr(caller, "name", None) or "an anonymous user")
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        self.baseline.reset()
        log.info("opcua: counts reset by %s (the PLC's counts start again from 0; the event "
                 "log and the summary keep the run's totals)", caller.name)
        return []

    async def shut(self) -> None:
        server, self.server = self.server, None
        self._events = None
        if server is not None:
            try:
                await server.stop()
            except Exception as exc:  # a half-started server may not stop cleanly
                log.debug("opcua: stopping: %s", exc)

    async def put_values(self, changed: list[tuple[Point, Any]]) -> None:
        server = self.server
        assert server is not None
        now = datetime.datetime.now(datetime.UTC)
        for point, value in changed:
            await server.write_attribute_value(self.nodes[point.name], ua.DataValue(
                ua.Variant(value, VARIANTS[point.type]), SourceTimestamp=now,
                ServerTimestamp=now))

    async def announce(self, events: list[Event], rejects: list[Reject], at: float) -> None:
        for e in events:
            said = _said(e)
            if said is not None:
                await self._fire(said)
        for r in rejects:
            latency = round(1000 * (at - r.captured), 2)
            await self._fire(_Said(r.camera, "reject", r.line or "", r.track, r.grade or "",
                                   600, f"reject track {r.track} ({r.grade}): {latency:.0f} "
                                   "ms after capture", latency))

    async def _fire(self, said: _Said) -> None:
        gen = self._events
        if gen is None:
            return
        ev: Any = gen.event
        ev.Camera, ev.Kind, ev.Subject, ev.Track, ev.Grade, ev.LatencyMs = (
            said.camera, said.kind, said.subject, said.track, said.grade, said.latency_ms)
        ev.Severity = said.severity
        ev.SourceName = f"{self.layout.station}/{said.camera}"
        ev.SourceNode = self.cameras.get(said.camera, ua.NodeId(ua.ObjectIds.Server))
        await gen.trigger(message=said.message)
        self.events_sent += 1


@dataclass(frozen=True)
class _Said:
    """An event as the PLC hears it (the fields of ``CoralMfgEventType``)."""

    camera: str
    kind: str
    subject: str  # the zone, the presence check, the inspected label or the reject line
    track: int  # -1: none
    grade: str
    severity: int
    message: str
    latency_ms: float = 0.0


def _said(e: Event) -> _Said | None:
    """An event as the PLC hears it, or None for one it does not (a passing verdict)."""
    match e:
        case KeepoutEnter():
            return _Said(e.stream, e.type, e.zone, e.track, "", 900,
                         f"keep-out entry: zone {e.zone}, track {e.track}")
        case ZoneDwellExceeded():
            return _Said(e.stream, e.type, e.zone, e.track, "", 800,
                         f"dwell alarm: zone {e.zone}, track {e.track}, {e.seconds:.0f} s")
        case Graded() if not e.passed:
            return _Said(e.stream, "graded_fail", e.label, e.track, e.grade, 500,
                         f"failed verdict: {e.label} track {e.track} is {e.grade}")
        case PresenceMissing():
            return _Said(e.stream, e.type, e.check, -1, "", 700,
                         f"presence missing: {e.check} sees {e.seen} of {e.expected} "
                         f"{e.label}")
        case PresenceRestored():
            return _Said(e.stream, e.type, e.check, -1, "", 300,
                         f"presence restored: {e.check} sees {e.seen} of {e.expected} "
                         f"{e.label}")
        case CameraBlind():
            return _Said(e.stream, e.type, "", -1, "", 900,
                         f"camera blind ({e.reason}): its zone alarms read true")
        case CameraRestored():
            return _Said(e.stream, e.type, "", -1, "", 300,
                         f"camera sees again after {e.blind_s:.0f} s")
    return None


def _endpoint(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"opc.tcp://{shown}:{port}/"
