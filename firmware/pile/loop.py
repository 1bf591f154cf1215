"""The control tick: decide, command the converter, read it back, cut at once if needed.

Each tick the controller decides with the latest readings and the decision goes
out in the tick's one function-23 transaction, which also brings fresh readings.
If those fresh readings call for less power than was just written (a SOC floor
reached, a temperature crossed, the EV unplugged), the cut is written straight
away in a second transaction instead of waiting for the next tick. Half a tick
later `watch` reads the converter once more and cuts the same way, so a crossing
waits at most half a tick to be seen.
"""

from pile import events
from pile.clock import ticks_diff, ticks_ms
from pile.control import FAULT, STOPPED
from pile.telemetry import EV_CONNECTED


class ControlLoop:
    def __init__(self, pile, converter, meter=None, estop=None):
        self.pile = pile
        self.converter = converter
        self.meter = meter
        self.estop = estop
        self.converter_ok = False
        self.commanded = 0  # W last written to the converter
        self.cuts = 0  # immediate safety writes
        self._meter_at = None
        self._state = None
        self._meter_fresh = None  # unknown until the first reading or the first stale period
        self._ev = False
        self._live = False
        self._power_at_reading = 0  # W, the converter's power when the meter was last read
        self._load = None  # W, the household load that reading showed
        self._load_fall = 0  # W (<= 0), how far the load fell between the last two readings

    def _meter_inputs(self, now):
        """The site power to decide with, and the reading's age.

        The meter is read about once a second; the converter's power changes every tick.
        So the reading is moved on by the converter's change since it was taken (the
        household load it shows, reading less converter power then, stays put), and, while
        that load is falling, by its last fall once more. Deciding with the raw reading
        instead would take each change of the pile's own power for a change of the load and
        ratchet: discharge rising until a reading shows export, then collapsing.
        """
        meter = self.meter
        if meter is None:
            return 0, 1 << 29  # no meter: always "lost" (docs/decisions.md)
        moved = meter.site_w + self.pile.tel.power - self._power_at_reading
        return moved + self._load_fall, meter.age_ms(now)

    def _decide(self, now):
        pile = self.pile
        site_w, age = self._meter_inputs(now)
        pressed = self.estop.update(now) if self.estop is not None else False
        applied = pile.ctl.tick(now, pile.tel, self.converter_ok, site_w, age, pressed)
        fresh = age < pile.cfg.meter_stale_s * 1000
        pile.site_w = self.meter.site_w if fresh else None
        self._log_changes(pile.ctl)  # after every decision: a state can last one decision only
        return applied

    async def tick(self):
        pile = self.pile
        if pile.fault_reset_requested:
            pile.fault_reset_requested = False
            await self.converter.reset_fault()
        applied = self._decide(ticks_ms())
        self.converter_ok = await self.converter.poll(applied, applied != 0)
        self.commanded = applied if self.converter_ok else self.commanded
        if self.converter_ok:
            await self._cut_if_needed()  # the fresh readings, at once
        await self._poll_meter()

    async def watch(self):
        """Mid-tick: read the converter alone and cut at once if its fresh readings call for
        it. Commands nothing otherwise: setpoints and ramps go out with the tick."""
        if self.converter_ok and await self.converter.read():
            await self._cut_if_needed()

    async def _cut_if_needed(self):
        again = self._decide(ticks_ms())
        if _is_cut(again, self.commanded) and await self.converter.command(again, again != 0):
            self.commanded = again
            self.cuts += 1

    async def _poll_meter(self):
        meter = self.meter
        if meter is None:
            return
        now = ticks_ms()
        period = self.pile.cfg.meter_period_ms
        if self._meter_at is None or ticks_diff(now, self._meter_at) >= period:
            self._meter_at = now
            power = self.pile.tel.power  # the converter's, read this tick
            if await meter.poll(now):
                load = meter.site_w - power
                if self._load is not None:
                    self._load_fall = min(0, load - self._load)
                self._load = load
                self._power_at_reading = power

    def _log_changes(self, ctl):
        pile = self.pile
        log = pile.events.add
        up = ctl.uptime_s
        state = ctl.state
        if state != self._state:
            if state == FAULT:
                log(up, events.FAULT, pile.tel.fault_code)
            elif self._state == FAULT:
                log(up, events.FAULT_CLEARED)
            if state == STOPPED and ctl.estop:
                log(up, events.STOP, 2)
            self._state = state
        fresh = pile.site_w is not None
        if self.meter is not None and fresh != self._meter_fresh:
            if self._meter_fresh is not None or not fresh and up >= pile.cfg.meter_stale_s:
                log(up, events.METER_BACK if fresh else events.METER_LOST)
                self._meter_fresh = fresh
            elif fresh:
                self._meter_fresh = True  # the first reading after boot: nothing to report
        ev = bool(pile.tel.status & EV_CONNECTED)
        if ev != self._ev:
            log(up, events.EV_PLUGGED if ev else events.EV_UNPLUGGED)
            self._ev = ev
        if self._live and not ctl.setpoint_live:
            log(up, events.SETPOINT_EXPIRED)
        self._live = ctl.setpoint_live


def _is_cut(new, old):
    """Less power in the same direction, or a reversal: both must not wait."""
    if old > 0:
        return new < old
    if old < 0:
        return new > old
    return False
