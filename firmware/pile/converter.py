"""The bidirectional DC converter, driven through its register-map profile.

One control tick is one bus transaction: function 23 writes setpoint, command
and heartbeat and reads the status block back. A profile without function 23
(or a device that answers it with "illegal function") gets 16 then 3. The
heartbeat goes up by one every tick so the converter's own 5 s watchdog never
has to act; the firmware does not rely on it to stop.
"""

from micropython import const

from pile import profile as registers
from pile.modbus import DeviceException, ModbusError

_ILLEGAL_FUNCTION = const(1)
RUN = const(1)
STOP = const(0)


class Converter:
    def __init__(self, master, spec, tel, unit=None):
        self.master = master
        self.unit = unit if unit is not None else spec["unit"]
        self.tel = tel
        self.use_23 = spec.get("function_23", True)
        read = spec["read"]
        self._read_address = read["address"]
        self._read_count = read["count"]
        # (attribute, byte offset in the read block, type, scale), parsed once
        self._fields = [(name, 2 * (f[0] - read["address"]), f[1], f[2])
                        for name, f in spec["fields"].items()]
        control = spec["control"]
        self._control_address = control["address"]
        self._control = bytearray(2 * (registers.words(control["setpoint"]) + 2))
        self._setpoint_kind = control["setpoint"]
        self._fault_reset = spec.get("fault_reset")
        self._nameplate = spec.get("nameplate")
        self.heartbeat = 0
        self.has_nameplate = False
        self.last_error = None

    async def read_nameplate(self):
        """Rated charge and discharge power, read once; False until the converter answers."""
        plate = self._nameplate
        try:
            data = await self.master.read_holding(self.unit, plate["address"], plate["count"])
        except ModbusError as exc:
            self.last_error = exc
            return False
        for name, f in plate["fields"].items():
            setattr(self.tel, name, registers.decode(data, 2 * (f[0] - plate["address"]),
                                                     f[1]) * f[2])
        self.has_nameplate = True
        return True

    def _control_block(self, setpoint_w, run):
        self.heartbeat = (self.heartbeat + 1) & 0xFFFF
        kind = self._setpoint_kind
        buf = self._control
        registers.encode(buf, 0, kind, setpoint_w if run else 0)
        at = 2 * registers.words(kind)
        registers.encode(buf, at, "u16", RUN if run else STOP)
        registers.encode(buf, at + 2, "u16", self.heartbeat)
        return buf

    async def poll(self, setpoint_w, run):
        """One tick's transaction: command the converter, read its state into `tel`.

        Returns True when the converter answered. On failure `tel` keeps its last
        values; the controller counts failed polls and stops the pile after three.
        """
        if not self.has_nameplate and not await self.read_nameplate():
            return False
        buf = self._control_block(setpoint_w, run)
        master = self.master
        data = None
        try:
            if self.use_23:
                try:
                    data = await master.read_write(self.unit, self._read_address,
                                                   self._read_count, self._control_address, buf)
                except DeviceException as exc:
                    if exc.code != _ILLEGAL_FUNCTION:
                        raise
                    self.use_23 = False  # no function 23 on this converter: 16 then 3 now on
            if data is None:
                await master.write_multiple(self.unit, self._control_address, buf)
                data = await master.read_holding(self.unit, self._read_address,
                                                 self._read_count)
        except ModbusError as exc:
            self.last_error = exc
            return False
        self._store(data)
        return True

    async def read(self):
        """The status block alone (function 3), commanding nothing: the mid-tick look."""
        try:
            data = await self.master.read_holding(self.unit, self._read_address, self._read_count)
        except ModbusError as exc:
            self.last_error = exc
            return False
        self._store(data)
        return True

    def _store(self, data):
        tel = self.tel
        for name, offset, kind, scale in self._fields:
            setattr(tel, name, registers.decode(data, offset, kind) * scale)
        self.last_error = None

    async def command(self, setpoint_w, run):
        """Write the control block alone (function 16): a safety cut that cannot wait a tick."""
        try:
            await self.master.write_multiple(self.unit, self._control_address,
                                             self._control_block(setpoint_w, run))
        except ModbusError as exc:
            self.last_error = exc
            return False
        return True

    async def reset_fault(self):
        """Write 1 to the fault-reset register; True when the converter took it."""
        try:
            await self.master.write_single(self.unit, self._fault_reset, 1)
        except ModbusError as exc:
            self.last_error = exc
            return False
        return True
