"""A Modbus TCP server for PLCs: alarms as discrete inputs, occupancy and counts as input
registers; read-only.

The addresses are the map's (:mod:`coral_mfg.outputs.plc_map`, ``coral-mfg plc-map``):
0-based protocol addresses (the Modicon ``1xxxx`` / ``3xxxx`` notation adds 10001 /
30001). Every unit id gets the same answers. Discrete inputs and input registers cannot
be written by the protocol's nature; there are no coils or holding registers (a write
is answered with "illegal data address"). Addresses in the map's range that name
nothing read 0, so a PLC may read a whole block in one request.

Modbus has no security of its own: on any other address than loopback it serves
whoever reaches the port, so it belongs on the machine network only.
"""

from __future__ import annotations

import logging
from typing import Any

from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from coral_mfg.config.validators import parse_bind
from coral_mfg.outputs.plc import PlcServer, quiet, try_bind
from coral_mfg.outputs.plc_map import (
    CAMERA_BLOCK,
    DISCRETE_INPUT,
    Baseline,
    Point,
    StationLayout,
    registers,
)

log = logging.getLogger(__name__)

#: Function codes a value is set with inside the server (the tables it answers from).
_DISCRETE_INPUTS, _INPUT_REGISTERS = 2, 4
#: Where the tables the protocol writes (coils, holding registers) would be: one
#: read-only placeholder far from the map, so every write is refused.
_NOTHING = 65000


class ModbusServer(PlcServer):
    """See the module's docstring."""

    kind = "modbus"
    per_client = ("pymodbus",)

    def __init__(self, bind: str, layout: StationLayout, baseline: Baseline) -> None:
        self.host, self.port = parse_bind(bind)
        super().__init__(layout, baseline, f"{self.host}:{self.port}")
        self.size = CAMERA_BLOCK * (1 + max((c.slot for c in layout.cameras), default=0))
        self.server: ModbusTcpServer | None = None
        self.connections = 0
        self.clients = 0
        self.requests = 0
        quiet("pymodbus", self.faults)

    def own_counts(self) -> dict[str, Any]:
        return {"clients": self.clients, "connections": self.connections,
                "requests": self.requests}

    def _device(self) -> SimDevice:
        return SimDevice(0, simdata=(
            [SimData(_NOTHING, values=False, datatype=DataType.BITS, readonly=True)],
            [SimData(0, count=self.size, values=False, datatype=DataType.BITS)],
            [SimData(_NOTHING, values=0, datatype=DataType.REGISTERS, readonly=True)],
            [SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)],
        ))

    def _connected(self, connected: bool) -> None:
        if connected:
            self.connections += 1
            self.clients += 1
        else:
            self.clients = max(0, self.clients - 1)

    def _pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests += 1
        return pdu

    async def open(self) -> None:
        try_bind(self.host, self.port)
        self.server = ModbusTcpServer(self._device(), address=(self.host, self.port),
                                      trace_connect=self._connected, trace_pdu=self._pdu)
        await self.server.serve_forever(background=True)

    async def shut(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.shutdown()
        self.clients = 0

    async def put_values(self, changed: list[tuple[Point, Any]]) -> None:
        server = self.server
        assert server is not None
        for point, value in changed:
            ref = point.modbus
            if ref is None:
                continue
            code = _DISCRETE_INPUTS if ref.table == DISCRETE_INPUT else _INPUT_REGISTERS
            await server.async_setValues(0, code, ref.address, registers(point, value))
