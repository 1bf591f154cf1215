"""The physics behind the registers: converter, EV battery and site, plus a safety oracle.

`Plant.step(dt)` advances the model from what the firmware last wrote (setpoint,
command, heartbeat) and publishes the results in the converter's and meter's
registers (DESIGN section 4). The Oracle watches the physics, not the firmware's
claims, and records every moment a safety rule of DESIGN section 6 is broken.
"""

import asyncio
import struct
import time
from dataclasses import dataclass, field

from pilectl.sim.bus import Device

# converter status bits (register 0)
READY, RUNNING, FAULT, DERATING, EV_CONNECTED, CONTACTOR = 1, 2, 4, 8, 16, 32
HEARTBEAT_TIMEOUT_S = 5.0
SETPOINT, COMMAND, HEARTBEAT, FAULT_RESET = 256, 258, 259, 260


@dataclass
class PlantParams:
    capacity_kwh: float = 60.0
    soc: float = 0.60  # 0..1
    efficiency: float = 0.95  # each way
    rated_charge_w: int = 11000
    rated_discharge_w: int = 11000
    taper_from_soc: float = 0.80  # the EV accepts less charge above this, none at 100 %
    ambient_c: float = 25.0
    battery_temp_c: float = 25.0
    battery_heat_c_per_kws: float = 0.0005  # temperature rise per kW per second
    battery_tau_s: float = 1800.0  # relaxation to ambient
    converter_temp_c: float = 35.0
    converter_heat_c_per_kws: float = 0.002
    converter_tau_s: float = 300.0
    grid_voltage_v: float = 230.0
    dc_voltage_v: float = 400.0
    ev_connected: bool = True


@dataclass
class OracleLimits:
    min_soc_pct: float = 20.0
    battery_cutoff_c: float = 55.0
    battery_min_charge_c: float = 0.0
    converter_cutoff_c: float = 90.0
    site_import_limit_w: float = 11000.0
    site_export_limit_w: float = 0.0
    # How long a rule may be broken before it counts: the pile only learns of a crossing
    # at its next poll, and of the site at its next meter reading.
    reaction_s: float = 0.75
    site_reaction_s: float = 2.5
    tolerance_w: float = 50.0


@dataclass
class Violation:
    rule: str
    start_s: float
    end_s: float
    worst: float
    limit: float


@dataclass
class Oracle:
    limits: OracleLimits = field(default_factory=OracleLimits)
    violations: list = field(default_factory=list)
    _since: dict = field(default_factory=dict)  # rule -> (start time, worst value)
    freq: object = None  # a grid.FreqWatch when the scenario expects a frequency response
    # every breach, however short (a violation is one that outlasts its grace): rule ->
    # {"seconds": time broken in all, "worst_beyond": the most past the limit, its units}
    excursions: dict = field(default_factory=dict)
    _checked_at: float = None  # the last check's time, and the step since (`_dt`) that
    _dt: float = 0.0  # every rule broken in this check counts as its time broken

    def check(self, t, plant, site_w):
        lim = self.limits
        self._dt = 0.0 if self._checked_at is None else t - self._checked_at
        self._checked_at = t
        p = plant.power_w
        soc_pct = plant.soc * 100
        self._rule(t, "discharge at or below the SOC floor", p < 0 and soc_pct <= lim.min_soc_pct,
                   soc_pct, lim.min_soc_pct, lim.reaction_s)
        self._rule(t, "power while the battery is over its cutoff",
                   p != 0 and plant.battery_temp_c >= lim.battery_cutoff_c,
                   plant.battery_temp_c, lim.battery_cutoff_c, lim.reaction_s)
        self._rule(t, "charging a battery below its cold limit",
                   p > 0 and plant.battery_temp_c < lim.battery_min_charge_c,
                   plant.battery_temp_c, lim.battery_min_charge_c, lim.reaction_s)
        self._rule(t, "power while the converter is over its cutoff",
                   p != 0 and plant.converter_temp_c >= lim.converter_cutoff_c,
                   plant.converter_temp_c, lim.converter_cutoff_c, lim.reaction_s)
        self._rule(t, "site import above its cap",
                   p > 0 and site_w > lim.site_import_limit_w + lim.tolerance_w,
                   site_w, lim.site_import_limit_w, lim.site_reaction_s)
        self._rule(t, "site export above its cap",
                   p < 0 and -site_w > lim.site_export_limit_w + lim.tolerance_w,
                   -site_w, lim.site_export_limit_w, lim.site_reaction_s)
        # Stale counts only while the converter could hear the firmware: a deaf converter
        # (a cut bus) cannot be told to stop, and stops itself (its own watchdog).
        self._rule(t, "power commanded while the heartbeat is stale",
                   plant.commanded_w != 0 and plant.unheard_s > HEARTBEAT_TIMEOUT_S,
                   plant.unheard_s, HEARTBEAT_TIMEOUT_S, 0.0)
        if self.freq is not None:
            short = self.freq.shortfall(t, plant.grid_hz, plant, lim)
            self._rule(t, "frequency response short of 90 % after its response time",
                       short > 0, short, 0.0, 0.0)

    def _rule(self, t, rule, broken, value, limit, grace):
        if not broken:
            self._since.pop(rule, None)
            return
        seen = self.excursions.setdefault(rule, {"seconds": 0.0, "worst_beyond": 0.0})
        seen["seconds"] += self._dt
        seen["worst_beyond"] = max(seen["worst_beyond"], abs(value - limit))
        start, worst, recorded = self._since.get(rule, (t, value, None))
        worst = max(worst, value) if value >= limit else min(worst, value)
        if t - start > grace:
            if recorded is None:
                recorded = Violation(rule, start, t, worst, limit)
                self.violations.append(recorded)
            recorded.end_s, recorded.worst = t, worst
        self._since[rule] = (start, worst, recorded)

    def summary(self):
        return [v.__dict__ for v in self.violations]


class Plant:
    """Converter, EV battery and site load, stepping in simulated seconds."""

    def __init__(self, params=None, load_w=None, meter_unit=2, converter_unit=1, grid_hz=None):
        self.p = params or PlantParams()
        p = self.p
        self.soc = p.soc
        self.battery_temp_c = p.battery_temp_c
        self.converter_temp_c = p.converter_temp_c
        self.ev_connected = p.ev_connected
        self.power_w = 0.0
        self.commanded_w = 0  # what the firmware asks for, before the converter's own limits
        self.energy_in_wh = 0.0
        self.energy_out_wh = 0.0
        self.fault_code = 0
        self.heartbeat_age_s = 0.0
        self.converter_listening = True  # False while the bus does not reach the converter
        self.unheard_s = 0.0  # of heartbeat_age_s, the time the converter was listening
        self.converter_unit = converter_unit
        self.load_w = load_w or (lambda t: 3000.0)
        self.grid_hz_at = grid_hz or (lambda t: 50.0)  # the grid's frequency over time
        self.grid_hz = self.grid_hz_at(0)
        self.site_w = self.load_w(0)
        self.t = 0.0
        self.converter = Device(holding={a: 0 for a in list(range(0, 18)) +
                                         list(range(256, 261)) + list(range(512, 516))})
        self.meter = Device(input={52: 0, 53: 0}, holding={8210: 0, 8211: 0})
        self.converter.on_write = self._written
        self.devices = {converter_unit: self.converter, meter_unit: self.meter}
        self._heartbeat = None
        self.publish()

    # -- what the firmware writes -------------------------------------------------------

    def _written(self, address, values):
        if address <= HEARTBEAT < address + len(values):
            beat = values[HEARTBEAT - address]
            if beat != self._heartbeat:
                self._heartbeat = beat
                self.heartbeat_age_s = self.unheard_s = 0.0
        if address <= FAULT_RESET < address + len(values) and values[FAULT_RESET - address]:
            self.fault_code = 0
            self.converter.holding[FAULT_RESET] = 0

    def _setpoint(self):
        hold = self.converter.holding
        return setpoint_w([hold[SETPOINT], hold[SETPOINT + 1]])

    def control_writes(self):
        """From now on, (time.monotonic(), registers) of every write of the converter's
        control block (setpoint, command, heartbeat): for latency and period measurements."""
        writes = []
        original = self.converter.on_write

        def on_write(address, values):
            original(address, values)
            if address == SETPOINT:
                writes.append((time.monotonic(), list(values)))

        self.converter.on_write = on_write
        return writes

    def hold_grid(self, hz):
        """The grid at `hz` from now on, in the frequency register at once (a step)."""
        self.grid_hz_at = lambda t: hz
        self.grid_hz = hz
        self.publish()

    # -- limits the converter itself applies ---------------------------------------------

    def ev_max_charge_w(self):
        p = self.p
        if not self.ev_connected:
            return 0
        if self.soc <= p.taper_from_soc:
            return p.rated_charge_w
        return max(0, int(p.rated_charge_w * (1 - self.soc) / (1 - p.taper_from_soc)))

    def ev_max_discharge_w(self):
        return self.p.rated_discharge_w if self.ev_connected and self.soc > 0.05 else 0

    def step(self, dt):
        p = self.p
        self.t += dt
        self.heartbeat_age_s += dt
        if self.converter_listening:
            self.unheard_s += dt
        hold = self.converter.holding
        running = hold[COMMAND] == 1
        self.commanded_w = self._setpoint() if running else 0
        alive = self.heartbeat_age_s <= HEARTBEAT_TIMEOUT_S  # the converter's own watchdog
        power = 0.0
        if running and alive and self.ev_connected and not self.fault_code:
            power = max(-self.ev_max_discharge_w(), min(self.ev_max_charge_w(),
                                                        self.commanded_w))
        self.power_w = power
        kwh = power * dt / 3600 / 1000
        if power > 0:
            self.soc += kwh * p.efficiency / p.capacity_kwh
            self.energy_in_wh += kwh * 1000
        else:
            self.soc += kwh / p.efficiency / p.capacity_kwh
            self.energy_out_wh -= kwh * 1000
        self.soc = min(1.0, max(0.0, self.soc))
        kw = abs(power) / 1000
        self.battery_temp_c += dt * (p.battery_heat_c_per_kws * kw
                                     - (self.battery_temp_c - p.ambient_c) / p.battery_tau_s)
        self.converter_temp_c += dt * (p.converter_heat_c_per_kws * kw
                                       - (self.converter_temp_c - p.ambient_c) / p.converter_tau_s)
        self.site_w = self.load_w(self.t) + power
        self.grid_hz = self.grid_hz_at(self.t)
        self.publish()

    def publish(self):
        """Put the plant's state into the registers now; every step does, and a test that
        changes the state between steps calls it so the change shows at once."""
        p = self.p
        status = READY
        if self.power_w:
            status |= RUNNING | CONTACTOR
        if self.fault_code:
            status |= FAULT
        if self.ev_connected:
            status |= EV_CONNECTED
        current = self.power_w / p.dc_voltage_v
        words = {
            0: status, 1: self.fault_code, 4: int(p.dc_voltage_v * 10),
            5: int(current * 10) & 0xFFFF, 6: int(self.soc * 1000),
            7: int(self.battery_temp_c * 10) & 0xFFFF,
            8: int(self.converter_temp_c * 10) & 0xFFFF,
            9: self.ev_max_charge_w() // 10, 10: self.ev_max_discharge_w() // 10,
            11: round(self.grid_hz * 100), 12: int(p.grid_voltage_v * 10),
            13: self.converter.holding[HEARTBEAT],
        }
        hold = self.converter.holding
        hold.update(words)
        _put32(hold, 2, int(self.power_w))
        _put32(hold, 14, int(self.energy_in_wh))
        _put32(hold, 16, int(self.energy_out_wh))
        _put32(hold, 512, p.rated_charge_w)
        _put32(hold, 514, p.rated_discharge_w)
        hi, lo = struct.unpack(">HH", struct.pack(">f", self.site_w))
        self.meter.input[52], self.meter.input[53] = hi, lo
        hi, lo = struct.unpack(">HH", struct.pack(">f", self.site_w * 10))  # DTSU666: 0.1 W
        self.meter.holding[8210], self.meter.holding[8211] = hi, lo


async def first_write(writes, since, condition, timeout=3.0):
    """Seconds from `since` to the first write in `writes` (Plant.control_writes) whose
    setpoint (W) meets `condition`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for at, registers in writes:
            if at >= since and condition(setpoint_w(registers)):
                return at - since
        await asyncio.sleep(0.002)
    raise TimeoutError("no matching Modbus write")


def _put32(table, address, value):
    value &= 0xFFFFFFFF
    table[address], table[address + 1] = value >> 16, value & 0xFFFF


def setpoint_w(registers):
    """The signed setpoint (W) in the first two registers of a control-block write."""
    value = registers[0] << 16 | registers[1]
    return value - (1 << 32) if value & 0x80000000 else value
