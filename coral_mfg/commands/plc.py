"""``coral-mfg plc-map``: the node ids and Modbus addresses a configuration serves; and
``coral-mfg plc-poll``: read them from a running station as a PLC would, to commission
a station or to load it while measuring.

Both make the map with the run's own function (:mod:`coral_mfg.runtime.plc`), from the
same flags and config file, so what they print is what the station serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from coral_mfg.config.flags import resolve_settings, run_parser
from coral_mfg.config.settings import Settings
from coral_mfg.config.validators import parse_bind
from coral_mfg.outputs.opcua import ENV_ADMIN_PASSWORD, ENV_PASSWORD, RESET_METHOD
from coral_mfg.outputs.plc_map import (
    DISCRETE_INPUT,
    NAMESPACE_INDEX,
    ROOT,
    Point,
    from_registers,
    points,
    string_id,
    table,
)
from coral_mfg.runtime.plc import file_grades, station_layout

#: The most one Modbus request may read.
MAX_BITS, MAX_REGISTERS = 2000, 125
#: Addresses this close are read in one request, the gap with them.
GAP = 50


def _map(settings: Settings) -> list[Point]:
    return points(station_layout(settings, file_grades(settings)))


def plc_map_main(argv: Sequence[str]) -> int:
    parser = run_parser("coral-mfg plc-map")
    parser.description = ("Print the OPC UA node ids and Modbus addresses the station serves "
                          "with these flags and config file (see docs/plc.md).")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="a table to read (default), or JSON to paste into a PLC tool")
    args = parser.parse_args(argv)
    entries = _map(resolve_settings(args))
    if args.format == "json":
        print(json.dumps([e.record() for e in entries], indent=2))
    else:
        print(table(entries))
    return 0


def plc_poll_main(argv: Sequence[str]) -> int:
    parser = run_parser("coral-mfg plc-poll")
    parser.description = (
        "Read every value of the map from a running station, over OPC UA (--opcua) and/or "
        "Modbus (--modbus), every --every seconds, and print each change with the time. "
        f"The OPC UA password comes from ${ENV_PASSWORD} (or ${ENV_ADMIN_PASSWORD} with "
        "--reset); security none only (loopback).")
    parser.add_argument("--every", type=float, default=0.1, metavar="S",
                        help="seconds between reads (default 0.1)")
    parser.add_argument("--seconds", type=float, default=0.0, metavar="S",
                        help="stop after S seconds (default: at Ctrl-C or SIGTERM)")
    parser.add_argument("--user", metavar="USER", help="log in to OPC UA as USER")
    parser.add_argument("--reset", action="store_true",
                        help="call ResetCounts (as the admin --user) once, then poll")
    parser.add_argument("--quiet", action="store_true",
                        help="print nothing but the totals at the end (to load a station)")
    args = parser.parse_args(argv)
    settings = resolve_settings(args)
    if settings.opcua.opcua is None and settings.modbus.modbus is None:
        parser.error("give --opcua URL and/or --modbus HOST:PORT (or a config that sets them)")
    for name in ("asyncua", "pymodbus"):  # their reconnect chatter; failed reads are said
        logging.getLogger(name).setLevel(logging.CRITICAL)
    poller = _Poller(settings, _map(settings), args)
    return asyncio.run(poller.run())


class _Poller:
    def __init__(self, settings: Settings, entries: list[Point], args: argparse.Namespace
                 ) -> None:
        self.settings = settings
        self.entries = entries
        self.args = args
        self.reads = 0
        self.errors = 0
        self.seen: dict[tuple[str, str], Any] = {}
        self.stop = asyncio.Event()
        self.waiting: set[str] = set()  # protocols yet to complete a first read
        self.reading_since: float | None = None  # CPU seconds used when all had read

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        tasks = []
        if self.settings.opcua.opcua is not None:
            self.waiting.add("opcua")
            tasks.append(asyncio.create_task(self._opcua(self.settings.opcua.opcua)))
        if self.settings.modbus.modbus is not None:
            self.waiting.add("modbus")
            tasks.append(asyncio.create_task(self._modbus(self.settings.modbus.modbus)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.args.seconds or None)
        self.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        reading_cpu = (None if self.reading_since is None
                       else round(time.process_time() - self.reading_since, 2))
        print(json.dumps({"reads": self.reads, "errors": self.errors,
                          "reading_cpu_s": reading_cpu}), file=sys.stderr)
        return 0

    def _read(self, via: str) -> None:
        """A whole read done; the first time every protocol has read, say so (one line on
        stdout: whoever started this client knows it now reads, its start-up is over)."""
        self.reads += 1
        if via in self.waiting:
            self.waiting.discard(via)
            if not self.waiting:
                self.reading_since = time.process_time()
                print(f"reading every {self.args.every:g} s", flush=True)

    def _show(self, via: str, point: Point, value: Any, where: str) -> None:
        key = (via, point.name)
        if key in self.seen and self.seen[key] == value:
            return
        self.seen[key] = value
        if not self.args.quiet:
            stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
            print(f"{stamp}  {via:<6}  {point.name} = {value!r}  ({where})", flush=True)

    async def _every(self) -> bool:
        """Wait for the next read; False once told to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.args.every)
        return not self.stop.is_set()

    async def _connected(self, connect: Any, disconnect: Any, error: type[Exception]) -> bool:
        """Try once to connect (the station may still be starting); raises CancelledError
        once told to stop."""
        try:
            await connect()
        except (error, OSError, TimeoutError):
            if not await self._every():
                raise asyncio.CancelledError from None
            return False
        await disconnect()
        return True

    async def _opcua(self, url: str) -> None:
        from asyncua import Client, ua

        client = Client(url)
        if self.args.user:
            client.set_user(self.args.user)
            client.set_password(os.environ.get(
                ENV_ADMIN_PASSWORD if self.args.reset else ENV_PASSWORD, ""))
        while not await self._connected(client.connect, client.disconnect, ua.UaError):
            pass
        async with client:
            if self.args.reset:
                station = client.get_node(ua.NodeId(
                    string_id((ROOT, self.settings.station)), NAMESPACE_INDEX))
                await station.call_method(f"{NAMESPACE_INDEX}:{RESET_METHOD}")
                print(f"{RESET_METHOD}: done", flush=True)
            nodes = [client.get_node(e.node_id) for e in self.entries]
            while True:
                try:
                    values = await client.read_values(nodes)
                    self._read("opcua")
                except (ua.UaError, OSError, TimeoutError) as exc:
                    self.errors += 1
                    print(f"opcua: read failed: {exc}", file=sys.stderr)
                    values = []
                for entry, value in zip(self.entries, values, strict=False):
                    self._show("opcua", entry, value, entry.node_id)
                if not await self._every():
                    return

    async def _modbus(self, bind: str) -> None:
        from pymodbus.client import AsyncModbusTcpClient
        from pymodbus.exceptions import ModbusException

        host, port = parse_bind(bind)
        client = AsyncModbusTcpClient(host, port=port)
        while not await client.connect():
            if not await self._every():
                return
        spans = _spans(self.entries)
        try:
            while True:
                got: dict[tuple[str, int], int | bool] = {}
                try:
                    for kind, start, count in spans:
                        if kind == DISCRETE_INPUT:
                            r = await client.read_discrete_inputs(start, count=count)
                            values: list[Any] = list(r.bits[:count])
                        else:
                            r = await client.read_input_registers(start, count=count)
                            values = list(r.registers)
                        if r.isError():
                            raise ModbusException(str(r))
                        got.update({(kind, start + i): v for i, v in enumerate(values)})
                    self._read("modbus")
                except (ModbusException, OSError, TimeoutError) as exc:
                    self.errors += 1
                    print(f"modbus: read failed: {exc}", file=sys.stderr)
                for entry in self.entries:
                    ref = entry.modbus
                    if ref is None or (ref.table, ref.address) not in got:
                        continue
                    raw = [got[(ref.table, ref.address + i)] for i in range(ref.count)]
                    kind = "DI" if ref.table == DISCRETE_INPUT else "IR"
                    self._show("modbus", entry, from_registers(entry, raw),
                               f"{kind} {ref.address}")
                if not await self._every():
                    return
        finally:
            client.close()


def _spans(entries: list[Point]) -> list[tuple[str, int, int]]:
    """The map's Modbus addresses as few requests as a PLC would make: (table, start,
    count), near addresses together, none longer than the protocol allows."""
    out: list[tuple[str, int, int]] = []
    for kind, most in ((DISCRETE_INPUT, MAX_BITS), ("input_register", MAX_REGISTERS)):
        wanted = sorted({e.modbus.address + i for e in entries if e.modbus is not None
                         and e.modbus.table == kind for i in range(e.modbus.count)})
        start = end = None
        for a in wanted:
            if start is not None and end is not None and a - end <= GAP and a - start < most:
                end = a
                continue
            if start is not None and end is not None:
                out.append((kind, start, end - start + 1))
            start = end = a
        if start is not None and end is not None:
            out.append((kind, start, end - start + 1))
    return out
