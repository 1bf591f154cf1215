"""A pymodbus RTU server over any serial device, with registers and fault injection.

Registers live in plain dicts per unit (holding and input), so the plant model
reads and writes them directly. Faults act where a real bus would show them:
a silent device, a slow one, an exception code, a corrupted CRC, noise ahead of
the reply, or a reply that claims another unit.
"""

import asyncio
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer

from pilectl.wire import crc_bytes

INPUT_FUNCTIONS = {4}


@dataclass
class Faults:
    silent: bool = False  # no reply at all, as a converter that lost power
    silent_units: set = field(default_factory=set)  # just these units are silent
    line_baud: int | None = None  # delay each reply by its wire time at this baud (benchmarks)
    delay_s: float = 0.0  # every reply this late
    exception: int | None = None  # answer every request with this exception code
    corrupt_crc: bool = False
    noise: bytes = b""  # sent ahead of each reply
    claim_unit: int | None = None  # reply as if from this unit
    no_function_23: bool = False  # a device without read/write-multiple
    received: list = field(default_factory=list)  # raw request frames, as on the wire
    requests: list = field(default_factory=list)  # (unit, function, address, count or values)


class Device:
    """One unit's registers: `holding` and `input` map address -> 16-bit value."""

    def __init__(self, holding=None, input=None):
        self.holding = dict(holding or {})
        self.input = dict(input or {})
        self.on_write = None  # called with (address, values) after every write


class BusContext(ModbusServerContext):
    """Routes pymodbus requests to Devices, applying the Faults."""

    def __init__(self, devices, faults):  # pylint: disable=super-init-not-called
        # ModbusServerContext's own init builds deprecated simulator structures we do not use;
        # these two attributes tell pymodbus 3.16 to call our async getters and setters.
        self.simdevices = []
        self.old_simulator = True
        self.devices = devices
        self.faults = faults

    def device_ids(self):
        return list(self.devices)

    async def _device(self, unit, function, answering=True):
        """The Device for `unit` once the faults have had their say; `answering` marks the
        call that produces the reply (function 23 writes, then reads: one delay, not two)."""
        faults = self.faults
        if faults.silent or unit in faults.silent_units or unit not in self.devices:
            raise NoSuchIdException(f"unit {unit} does not answer")
        delay = faults.delay_s
        if faults.line_baud and faults.received:  # request and reply as if on a real line
            delay += wire_s(len(faults.received[-1]) + reply_size(function, faults.received[-1]),
                            faults.line_baud)
        if delay and answering:
            await asyncio.sleep(delay)
        if faults.exception is not None:
            return ExcCodes(faults.exception)
        if function == 23 and faults.no_function_23:
            return ExcCodes.ILLEGAL_FUNCTION
        return self.devices[unit]

    async def async_getValues(self, device_id, func_code, address, count=1):
        device = await self._device(device_id, func_code)
        if isinstance(device, ExcCodes):
            return device
        table = device.input if func_code in INPUT_FUNCTIONS else device.holding
        if any(a not in table for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        if func_code != 23:  # function 23's read follows its write: logged once there
            self.faults.requests.append((device_id, func_code, address, count))
        return [table[a] for a in range(address, address + count)]

    async def async_setValues(self, device_id, func_code, address, values):
        device = await self._device(device_id, func_code, answering=func_code != 23)
        if isinstance(device, ExcCodes):
            return device
        if any(a not in device.holding for a in range(address, address + len(values))):
            return ExcCodes.ILLEGAL_ADDRESS
        self.faults.requests.append((device_id, func_code, address, list(values)))
        for offset, value in enumerate(values):
            device.holding[address + offset] = value
        if device.on_write is not None:
            device.on_write(address, list(values))
        return None


def wire_s(nbytes, baud):
    """Seconds for `nbytes` on an RTU line: 11 bits per character."""
    return nbytes * 11 / baud


def reply_size(function, request):
    """Bytes in the normal reply to an RTU request frame."""
    if function in (6, 16):
        return 8
    count = request[4] << 8 | request[5]  # registers read: functions 3, 4 and 23
    return 5 + 2 * count


def tamper(faults):
    """pymodbus trace_packet hook: what a bad line or a confused device does to replies."""

    def trace(sending, data):
        if not sending:
            faults.received.append(bytes(data))
            return data
        data = bytearray(data)
        if faults.claim_unit is not None:
            data[0] = faults.claim_unit
            data[-2:] = crc_bytes(bytes(data[:-2]))
        if faults.corrupt_crc:
            data[-1] ^= 0xFF
        return faults.noise + bytes(data)

    return trace


async def start_server(device_path, devices, faults, baud=115200):
    """Serve `devices` (unit -> Device) on `device_path` until cancelled."""
    server = ModbusSerialServer(BusContext(devices, faults), framer=FramerType.RTU,
                                port=device_path, baudrate=baud, ignore_missing_devices=True,
                                trace_packet=tamper(faults))
    await server.serve_forever(background=True)
    return server
