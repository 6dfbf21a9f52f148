"""Telling systemd how the run is doing (``Type=notify`` with a watchdog).

The protocol is one datagram to ``$NOTIFY_SOCKET``; without that variable
(not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time


def notify(message: str) -> bool:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1`` or ``STATUS=...``; False if unsent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        return False
    return True


class Watchdog:
    """Pings systemd at half its ``WatchdogSec``, only while the caller says the run lives."""

    def __init__(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.every = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._last = 0.0

    def alive(self) -> None:
        now = time.monotonic()
        if self.every is not None and now - self._last >= self.every:
            self._last = now
            notify("WATCHDOG=1")
