"""Events and state to an MQTT broker, for the systems a plant already runs.

Topics, under a prefix (default ``coral_mfg``):

- ``available``: ``online`` once connected, ``offline`` at a clean stop and as
  the broker's last will when the application dies; retained.
- ``events``: one JSON message per event, QoS 1.
- ``<camera>/state``: status, fps, dropped, skipped, errors, roles; retained,
  QoS 1 (queued while the broker is away, like the events).
- ``<camera>/zones/<zone>/occupancy``: people in the zone now, or ``unknown`` while
  the camera is blind (never 0: a PLC must not read a blind camera as clear);
  retained, on change.
- ``<camera>/lines/<line>/counts``: crossings per direction (and grade); retained.
- ``<camera>/presence/<check>``: state (ok, missing, unknown), expected, seen; retained.
- ``<camera>/inspection/counts``: the camera's objects by grade; retained, on change.
- ``inspection/counts``: the station's objects by grade (every camera's); retained.

A name in a topic (a zone's) is one level, percent-encoded where it holds
``/``, ``+``, ``#`` or ``%`` (:func:`~coral_mfg.core.names.name_part`): ``Press #2``
is published as ``<camera>/zones/Press %232/occupancy``; payloads carry the name
as written.

paho's network thread does the talking. Publishing only queues a message, so
a slow or absent broker never holds up the output thread; the queue is
bounded (``mqtt_queue`` QoS 1 messages), and what does not fit is counted
as dropped. While the broker is away, paho reconnects with backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from coral_mfg.config.settings import MqttConfig
from coral_mfg.core.events import Event, event_json
from coral_mfg.core.names import name_part
from coral_mfg.core.results import FrameResult
from coral_mfg.core.status import RunStatus, line_record, presence_record, stream_record
from coral_mfg.outputs.base import SinkBase
from coral_mfg.outputs.health import OutputHealth

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
RECONNECT_S = (1, 30)
GOODBYE_S = 2.0  # a clean stop waits this long for "offline" to reach the broker
ENV_USER = "CORAL_MFG_MQTT_USERNAME"
ENV_PASSWORD = "CORAL_MFG_MQTT_PASSWORD"


def broker_address(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of an ``mqtt://`` or ``mqtts://`` URL (checked by the settings)."""
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    assert parts.hostname is not None
    return parts.hostname, parts.port or (8883 if tls else 1883), tls


class MqttPublisher(SinkBase):
    """Publishes what the run produces; see the module's docstring for the topics."""

    def __init__(self, config: MqttConfig, station: str) -> None:
        assert config.mqtt is not None
        self.host, self.port, tls = broker_address(config.mqtt)
        self.prefix = config.mqtt_prefix.strip("/")
        self.state_every = config.mqtt_state_seconds
        self._state_at = -config.mqtt_state_seconds
        self.health = OutputHealth("mqtt")
        self.published = 0
        self.connects = 0
        self._lock = threading.Lock()
        self._last: dict[str, str] = {}  # retained topic -> payload last published
        self._queued = 0  # messages paho took to send: at the end, those not published
        self._stopping = False
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=config.mqtt_client_id or f"coral_mfg-{station}")
        self.client.max_queued_messages_set(config.mqtt_queue)
        self.client.will_set(self.topic("available"), "offline", qos=1, retain=True)
        self._credentials(config)
        if tls:
            self.client.tls_set(ca_certs=_str(config.mqtt_ca_file),
                                certfile=_str(config.mqtt_cert_file),
                                keyfile=_str(config.mqtt_key_file))
        self.client.reconnect_delay_set(*RECONNECT_S)
        self.client.on_connect = self._connected
        self.client.on_connect_fail = self._connect_failed
        self.client.on_disconnect = self._disconnected
        self.client.on_publish = self._published
        self._tls = tls

    def start(self) -> None:
        """Connect in the background (paho's thread); the run never waits for the broker."""
        log.info("mqtt: publishing to %s:%d%s under '%s/'", self.host, self.port,
                 " (TLS)" if self._tls else "", self.prefix)
        self.client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()

    def _credentials(self, config: MqttConfig) -> None:
        parts = urlsplit(config.mqtt or "")
        user = unquote(parts.username or "") or config.mqtt_username or os.environ.get(ENV_USER)
        password = (unquote(parts.password or "") or config.mqtt_password
                    or os.environ.get(ENV_PASSWORD))
        if user:
            self.client.username_pw_set(user, password or None)

    def topic(self, *levels: str) -> str:
        """The prefix (checked by the settings), then each level as one encoded level."""
        return "/".join((self.prefix, *(name_part(level) for level in levels)))

    # --- connection ------------------------------------------------------------------------

    def _connected(self, client: mqtt.Client, _userdata: Any, _flags: Any,
                   reason: Any, _properties: Any) -> None:
        if reason.is_failure:
            self.health.failed(f"broker {self.host}:{self.port} refused: {reason}", lost=0)
            return
        self.connects += 1
        log.info("mqtt: connected to %s:%d", self.host, self.port)
        self.health.wrote(0)
        if self.connects > 1:
            with self._lock:  # a restarted broker may have lost its retained topics
                self._last.clear()  # (on the first connect, what was queued goes out)
        # QoS 0: connected now, it goes out at once, and messages held while the broker
        # was away cannot crowd it out of the bounded queue
        self._send(self.topic("available"), "online", qos=0, retain=True)

    def _connect_failed(self, _client: mqtt.Client, _userdata: Any) -> None:
        self.health.failed(f"broker {self.host}:{self.port} unreachable; retrying", lost=0)

    def _disconnected(self, _client: mqtt.Client, _userdata: Any, _flags: Any,
                      reason: Any, _properties: Any) -> None:
        if not self._stopping:
            self.health.failed(f"lost the broker {self.host}:{self.port} ({reason}); "
                               "reconnecting", lost=0)

    # --- publishing ------------------------------------------------------------------------

    def _published(self, _client: mqtt.Client, _userdata: Any, _mid: int, _reason: Any,
                   _properties: Any) -> None:
        """A message reached the broker (QoS 1: acknowledged; QoS 0: sent)."""
        with self._lock:
            self.published += 1
        self.health.wrote()

    def _send(self, topic: str, payload: str, qos: int = 1, retain: bool = False) -> None:
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:  # a topic or payload the protocol refuses: a bug here
            self.health.failed(f"cannot publish to {topic!r}: {exc}")
            return
        kept = info.rc == mqtt.MQTT_ERR_SUCCESS or (
            info.rc == mqtt.MQTT_ERR_NO_CONN and qos > 0)  # kept, sent after reconnecting
        if kept:
            with self._lock:
                self._queued += 1
        elif self.health.error is not None:
            self.health.failed(self.health.error)  # lost while the broker is away
        else:
            self.health.drop()  # the queue is full

    def _retained(self, topic: str, payload: dict[str, Any] | int | str) -> None:
        """A retained topic, published only when its value changed (a word as it is)."""
        text = payload if isinstance(payload, str) else json.dumps(payload,
                                                                   separators=(",", ":"))
        with self._lock:
            if self._last.get(topic) == text:
                return
            self._last[topic] = text
        self._send(topic, text, qos=1, retain=True)

    def write(self, result: FrameResult) -> None:
        for event in result.events:
            self.event(event)

    def event(self, event: Event) -> None:
        self._send(self.topic("events"), json.dumps(event_json(event), separators=(",", ":")))

    def status(self, status: RunStatus) -> None:
        """Per camera, occupancy and counts when they change, and the station's counts;
        each camera's state every ``mqtt_state_seconds``."""
        for stream in status.streams:
            for zone in stream.zones:
                if zone.enabled:
                    people = stream.occupancy(zone.name)
                    self._retained(self.topic(stream.name, "zones", zone.name, "occupancy"),
                                   "unknown" if people is None else people)
            for line in stream.lines:
                self._retained(self.topic(stream.name, "lines", line.name, "counts"),
                               line_record(line))
            for check in stream.presence:
                self._retained(self.topic(stream.name, "presence", check.name),
                               presence_record(stream, check))
            if stream.inspected:
                self._retained(self.topic(stream.name, "inspection", "counts"),
                               dict(stream.inspected))
        if status.inspected:
            self._retained(self.topic("inspection", "counts"), status.inspected)
        now = time.monotonic()
        if now - self._state_at >= self.state_every:
            self._state_at = now
            self._states(status, stopped=False)

    def stopped(self, status: RunStatus) -> None:
        """The last state of each stream, ``stopped``: the run is ending."""
        self._states(status, stopped=True)

    def _states(self, status: RunStatus, *, stopped: bool) -> None:
        for stream in status.streams:
            record = stream_record(status, stream, stopped=stopped)
            self._send(self.topic(stream.name, "state"),
                       json.dumps(record, separators=(",", ":")), qos=1, retain=True)

    def close(self) -> None:
        """Say ``offline`` (retained) and leave; the last will covers every other exit."""
        if self._stopping:
            return
        info = self.client.publish(self.topic("available"), "offline", qos=1, retain=True)
        with self._lock:
            self._queued += 1
        if self.client.is_connected():
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(GOODBYE_S)
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock:
            unsent = max(0, self._queued - self.published)
        if unsent:  # still queued for a broker that did not come back: lost with the run
            self.health.lost_at_end(unsent)
            log.warning("mqtt: %d message(s) still queued for the broker %s:%d at the end of "
                        "the run: lost", unsent, self.host, self.port)

    def counts(self) -> dict[str, Any]:
        c = self.health.counts()
        return {"published": self.published, "dropped": c["dropped"], "lost": c["lost"],
                "connected": self.client.is_connected(), "connects": self.connects,
                "error": c["error"]}


def _str(path: Any) -> str | None:
    return None if path is None else str(path)
