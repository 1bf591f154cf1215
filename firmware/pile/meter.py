"""The site meter: total site power (W, + import), polled about once a second.

A reading carries its age; the safety envelope treats one older than
`meter_stale_s` as lost (no discharge, charge capped).
"""

from pile import profile as registers
from pile.clock import ticks_diff
from pile.modbus import READ_INPUT, ModbusError

NEVER = 1 << 29  # ms: the age of a reading that never came


class Meter:
    def __init__(self, master, spec, unit=None):
        self.master = master
        self.unit = unit if unit is not None else spec["unit"]
        self._input = spec.get("function", READ_INPUT) == READ_INPUT
        self._address, self._kind, self._scale = spec["power"]
        self._sign = 1 if spec.get("import_positive", True) else -1
        self.site_w = 0
        self._read_at = None
        self.failures = 0
        self.last_error = None

    async def poll(self, now):
        """Read the site power; True on success, else the last reading just gets older."""
        count = registers.words(self._kind)
        try:
            if self._input:
                data = await self.master.read_input(self.unit, self._address, count)
            else:
                data = await self.master.read_holding(self.unit, self._address, count)
        except ModbusError as exc:
            self.failures += 1
            self.last_error = exc
            return False
        value = registers.decode(data, 0, self._kind) * self._scale * self._sign
        self.site_w = int(value)
        self._read_at = now
        self.last_error = None
        return True

    def age_ms(self, now):
        if self._read_at is None:
            return NEVER
        return ticks_diff(now, self._read_at)
