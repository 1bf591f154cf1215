"""The control loop: once a period, decide, command the converter, read it back, cut at
once if needed; half a period later, look again.

Each tick the controller decides with the latest readings and the decision goes
out in the tick's one function-23 transaction, which also brings fresh readings.
If those fresh readings call for less power than was just written (a SOC floor
reached, a temperature crossed, the EV unplugged), the cut is written straight
away in a second transaction instead of waiting for the next tick; so is a frequency
response that moved with the fresh grid frequency. Half a period later `watch` reads the
converter once more and cuts (or responds) the same way, so a crossing waits at most half
a period to be seen. The loop is the only caller of
`Controller.decide`, and it carries out the actions requests leave on the Pile.

The rules are split from the I/O. `ControlStep` holds a period's rules as plain
methods that take the readings as arguments and do no I/O: `decide` (the decision with
the converter's latest readings, in the Pile's telemetry, and the meter's latest
reading, moved on by the pile's own change since; the stale-meter rule; the event log),
`polled` (the tick's transaction done), `cut_due` (a power just decided goes out at once,
or waits for the next tick), `cut_written`, `meter_due` and `meter_polled`. `ControlLoop`
is a ControlStep that does the I/O around them on the board's schedule: its coroutines
call them between Modbus transactions. The pile emulator (pilectl/aggregator/emulator.py) calls
the same methods with its battery model's readings, so an emulated pile decides, cuts
and logs as a board does. A subclass rather than a member, so the loop's counters
(`commanded`, `converter_ok`, `cuts`) stay where DIAGNOSTICS and the benches read them,
and a decision costs no extra attribute lookup on a board.
"""

import asyncio
import gc

from micropython import const

from pile import events
from pile.app import ACTION_REBOOT, ACTION_RESET_FAULT
from pile.clock import ticks_add, ticks_diff, ticks_ms, ticks_us
from pile.control import STATE_FAULT, STATE_NO_EV, STATE_STOPPED
from pile.meter import NEVER
from pile.telemetry import STATUS_EV_CONNECTED

_REBOOT_DELAY_MS = const(300)  # lets the reply to the reboot request leave first
_FLUSH_MS = const(1000)  # new events go to flash at most this often: one commit a second
_LIMIT_BITS = const(0x2FF)  # reasons logged as EVENT_LIMITS: SOC, reserve, temperatures,
# site caps, EV limit (meter, fault, stop, expiry and EV have events of their own)
_LIMITS_LOG_S = const(10)  # a limit flickering at its edge logs at most every 10 s
_MEM_FREE = hasattr(gc, "mem_free")  # MicroPython's; CPython has no such figure
# The collection in the gap, and the heap figures, every 10 s: on an RP2040 a collection
# of the 240 KB heap takes 16 ms and each mem_free() 8.5 ms, most of the core's time
# when done every period. A period allocates only its coroutine frames (about 1 KB), so
# the heap never fills in between; a flood on the link that fills it sooner is collected
# by MicroPython itself, in the link's task.
_COLLECT_MS = const(10000)


class ControlStep:
    """A control period's rules for `pile`, without I/O: what to write to the converter,
    and when. `metered` says a site meter is wired.

    A period, as the board's ControlLoop runs it and the emulator too:
    - the tick: `power = decide(...)`; write it and read the converter back;
      `polled(ok, power)`; if ok, `again = decide(...)` with the fresh readings and, when
      `cut_due(again)`, write it and `cut_written(again)`; then, when `meter_due(now)`,
      read the meter and `meter_polled(...)`;
    - the watch, half a period later, if the converter answered the tick: read it; `again
      = decide(...)`, and the same cut.
    Time is a ticks_ms value on every call, so a test or an emulator drives the clock.
    """

    def __init__(self, pile, metered=True):
        self.pile = pile
        self.metered = metered
        self.converter_ok = False  # the converter answered the last tick's transaction
        self.commanded = 0  # W last written to the converter
        self._freq_commanded = 0  # W of it that was frequency response
        self.cuts = 0  # immediate safety writes
        self._due_cut = False  # the write cut_due asked for is a cut
        self._due_freq_w = 0  # W of that write that is frequency response
        self._meter_at = None  # ticks_ms of the last meter poll
        self._state = None
        self._meter_fresh = None  # unknown until the first reading or the first stale period
        self._ev = False
        self._sessions_ended = 0
        self._live = False
        # the meter's last reading (a site group's leader shares the headroom after each):
        self.read_at = None  # ticks_ms it was taken
        self.power_at_reading = 0  # W, the converter's power then
        self.load = None  # W, the household load it showed: the reading less that power
        self._load_fall = 0  # W (<= 0), how far the load fell between the last two readings
        self._limits = 0  # the _LIMIT_BITS last logged
        self._limits_at = -_LIMITS_LOG_S  # uptime s of that entry
        self._spent = 0  # the V2G budget's SPENT_* bits last logged

    def decide(self, now, site_w, meter_age_ms, pressed=False):
        """Decide with the converter's latest readings (the Pile's telemetry), the meter's
        latest reading (`site_w` W, + import, taken `meter_age_ms` ago; neither is used
        without a meter) and the E-stop input (`pressed`). Returns the power to write to
        the converter (W). The Pile's `site_w` is that reading while it is fresh, else None.
        """
        pile = self.pile
        if self.metered:
            moved = self._meter_inputs(site_w)
        else:
            moved, meter_age_ms = None, NEVER  # no meter: always "lost" (docs/decisions.md)
        applied = pile.ctl.decide(now, pile.tel, self.converter_ok, moved, meter_age_ms,
                                  pressed)
        fresh = meter_age_ms < pile.cfg.meter_stale_s * 1000
        pile.site_w = site_w if fresh else None
        self._log_changes(pile.ctl)  # after every decision: a state can last one decision only
        return applied

    def _meter_inputs(self, site_w):
        """The site power to decide with, from the meter's last reading `site_w`.

        The meter is read about once a second; the converter's power changes every tick.
        So the reading is moved on by the converter's change since it was taken (the
        household load it shows, reading less converter power then, stays put), and, while
        that load is falling, by its last fall once more. Deciding with the raw reading
        instead would take each change of the pile's own power for a change of the load and
        ratchet: discharge rising until a reading shows export, then collapsing.
        """
        return site_w + self.pile.tel.power - self.power_at_reading + self._load_fall

    def polled(self, ok, power):
        """The tick's transaction is done: `ok` when the converter answered, told `power` W
        (its fresh readings are then in the Pile's telemetry)."""
        self.converter_ok = ok
        if ok:
            self.commanded = power
            self._freq_commanded = self.pile.ctl.freq_w

    def cut_due(self, power):
        """Whether `power`, decided with fresh readings, is written at once rather than
        with the next tick: a cut (less power in the same direction, or a reversal) or a
        frequency response that moved; neither waits. When it is, call `cut_written(power)`
        once the converter took it."""
        commanded = self.commanded
        if power == commanded:
            return False
        cut = _is_cut(power, commanded)
        freq_w = self.pile.ctl.freq_w
        if not cut and freq_w == self._freq_commanded:
            return False
        self._due_cut = cut
        self._due_freq_w = freq_w
        return True

    def cut_written(self, power):
        """The converter took the write `cut_due` asked for."""
        self.commanded = power
        self._freq_commanded = self._due_freq_w
        if self._due_cut:
            self.cuts += 1

    def meter_due(self, now):
        """Whether the meter is read now: at the first tick, then every `meter_period_ms`."""
        at = self._meter_at
        return self.metered and (
            at is None or ticks_diff(now, at) >= self.pile.cfg.meter_period_ms)

    def meter_polled(self, now, site_w, power):
        """The meter was asked at `now`, the converter at `power` W: `site_w` is its reading
        (W, + import), None when it did not answer."""
        self._meter_at = now
        if site_w is not None:
            load = site_w - power
            if self.load is not None:
                self._load_fall = min(0, load - self.load)
            self.load = load
            self.power_at_reading = power
            self.read_at = now

    def _log_changes(self, ctl):
        pile = self.pile
        log = pile.events.add
        up = ctl.uptime_s
        state = ctl.state
        if state != self._state:
            if state == STATE_FAULT:
                log(up, events.EVENT_FAULT, pile.tel.fault_code)
            elif self._state == STATE_FAULT:
                log(up, events.EVENT_FAULT_CLEARED)
            if state == STATE_STOPPED and ctl.estop:
                log(up, events.EVENT_STOP, 2)
            self._state = state
        fresh = pile.site_w is not None
        if self.metered and fresh != self._meter_fresh:
            if self._meter_fresh is not None or not fresh and up >= pile.cfg.meter_stale_s:
                log(up, events.EVENT_METER_BACK if fresh else events.EVENT_METER_LOST)
                self._meter_fresh = fresh
            elif fresh:
                self._meter_fresh = True  # the first reading after boot: nothing to report
        ev = bool(pile.tel.status & STATUS_EV_CONNECTED)
        if ev != self._ev:
            log(up, events.EVENT_EV_PLUGGED if ev else events.EVENT_EV_UNPLUGGED)
            self._ev = ev
        if ctl.sessions_ended != self._sessions_ended:
            log(up, events.EVENT_SESSION_ENDED)
            self._sessions_ended = ctl.sessions_ended
        if self._live and not ctl.setpoint_live:
            log(up, events.EVENT_SETPOINT_EXPIRED)
        self._live = ctl.setpoint_live
        spent = ctl.budget.spent(pile.cfg)
        if spent != self._spent:  # about twice an hour at most: a spent budget opens when
            # an hour's Wh leave its window, and a discharge spends them again
            log(up, events.EVENT_BUDGET, spent)
            self._spent = spent
        limits = ctl.reasons & _LIMIT_BITS
        if limits != self._limits and up - self._limits_at >= _LIMITS_LOG_S:
            log(up, events.EVENT_LIMITS, limits)
            self._limits = limits
            self._limits_at = up


class ControlLoop(ControlStep):
    """`period()` is the whole schedule; main.py's control task runs it forever. The I/O
    around ControlStep's rules: the converter's and the meter's transactions, the E-stop,
    the outputs, the event flush, the collection.

    `contactor` and `led` are optional output pins, `reset` the HAL's reboot.
    """

    def __init__(self, pile, converter, meter=None, estop=None, contactor=None, led=None,
                 reset=None):
        super().__init__(pile, meter is not None)
        self.converter = converter
        self.meter = meter
        self.estop = estop
        self.contactor = contactor
        self.led = led
        self.reset = reset
        self.periods = 0
        self.poll_us = 0  # how long the last tick's converter transaction took
        self.watches_late = 0  # mid-period watches left to the next tick: they came too late
        self.late_max_ms = 0  # the latest a tick has begun after it was due, ms
        self.after_tick_max_ms = 0  # the longest flush, budget save and collection of a period
        self._flushed_at = ticks_ms() - _FLUSH_MS  # the first period flushes: the boot entry
        self.heap_free = None  # bytes free after the last collection (None on CPython)
        self.heap_low = None  # the fewest bytes free seen, just before a collection
        self._collected_at = ticks_ms() - _COLLECT_MS
        self.ticked = asyncio.Event()  # set after each tick: slow flash work starts then
        self.watched = asyncio.Event()  # set at mid-period, after the watch: the TELEMETRY

    def _decide(self, now):
        """`decide` with the meter's last reading and the E-stop input as they are now."""
        pressed = self.estop.update(now) if self.estop is not None else False
        meter = self.meter
        if meter is None:
            return self.decide(now, 0, NEVER, pressed)
        return self.decide(now, meter.site_w, meter.age_ms(now), pressed)

    async def period(self):
        """One control period of `tick_ms`: the tick at its start, the mid-tick look half a
        period later (unless the period is three quarters gone by then: the tick looks).
        The collection runs in the gap when due, so the heap never fragments into a
        failure at a busy moment; `ticked` is set there, for flash work to start."""
        started = ticks_ms()
        due = self.pile.next_tick_at
        if due is not None:
            self.late_max_ms = max(self.late_max_ms, ticks_diff(started, due))
        self.pile.next_tick_at = ticks_add(started, self.pile.cfg.tick_ms)
        await self.tick()
        self.show(self.pile.ctl.state)
        ticked = ticks_ms()
        if ticks_diff(started, self._flushed_at) >= _FLUSH_MS:
            self._flushed_at = started
            self.pile.flush_events()
        self.pile.keep_budget()  # a write only when due: every 75 Wh, hour or 10 minutes
        if ticks_diff(started, self._collected_at) >= _COLLECT_MS:
            self._collected_at = started
            self.collect()
        self.after_tick_max_ms = max(self.after_tick_max_ms, ticks_diff(ticks_ms(), ticked))
        self.ticked.set()
        period = self.pile.cfg.tick_ms
        await asyncio.sleep_ms(max(0, period // 2 - ticks_diff(ticks_ms(), started)))
        if ticks_diff(ticks_ms(), started) <= period * 3 // 4:
            await self.watch()
        else:  # held up past three quarters of the period: the next tick looks instead,
            self.watches_late += 1  # and is not held up by a late watch's transaction
        self.watched.set()
        await asyncio.sleep_ms(max(0, period - ticks_diff(ticks_ms(), started)))
        self.periods = (self.periods + 1) & 0x3FFFFFFF  # a small int for ever

    def collect(self):
        """A garbage collection, noting the heap free before it (the low mark) and after."""
        if _MEM_FREE:
            before = gc.mem_free()
            if self.heap_low is None or before < self.heap_low:
                self.heap_low = before
        gc.collect()
        if _MEM_FREE:
            self.heap_free = gc.mem_free()

    async def tick(self):
        """Carry out pending actions, decide, and one converter transaction (plus a cut and
        the meter when due)."""
        actions = self.pile.take_actions()
        if actions & ACTION_RESET_FAULT:
            await self.converter.reset_fault()
        if actions & ACTION_REBOOT:
            await self._reboot()
        applied = self._decide(ticks_ms())
        started = ticks_us()
        ok = await self.converter.poll(applied, applied != 0)
        self.poll_us = ticks_diff(ticks_us(), started)
        self.polled(ok, applied)
        if ok:
            again = self._decide(ticks_ms())  # the fresh readings, at once
            if self.cut_due(again):
                await self._cut(again)
        now = ticks_ms()
        if self.meter_due(now):
            await self._poll_meter(now)

    async def watch_estop(self):
        """The E-stop task: on a press, the cut goes to the converter at once (the bus
        master lets the transaction under way finish first); the next decision latches
        the stop."""
        estop = self.estop
        while True:
            await estop.wait_press()
            if await self.converter.command(0, False):
                self.commanded = 0
                self.cuts += 1

    async def _reboot(self):
        await asyncio.sleep_ms(_REBOOT_DELAY_MS)
        await self.converter.command(0, False)  # stopped, not left to its heartbeat watchdog
        self.pile.note_reset(events.RESET_REQUESTED)
        self.pile.flush_events()
        self.pile.keep_budget(force=True)
        if self.reset is not None:
            self.reset()

    def diagnostics(self):
        """Counters for the DIAGNOSTICS message: the loop's, the bus master's, the devices'."""
        converter = self.converter
        master = converter.master
        found = {"periods": self.periods, "safety_cuts": self.cuts,
                 "watches_late": self.watches_late, "tick_late_max_ms": self.late_max_ms,
                 "after_tick_max_ms": self.after_tick_max_ms,
                 "converter_poll_us": self.poll_us,
                 "converter_error": _describe(converter.last_error),
                 "modbus_transactions": master.transactions, "modbus_failures": master.failures,
                 "modbus_timeouts": master.timeouts, "modbus_bad_replies": master.bad_replies,
                 "modbus_exceptions": master.exceptions, "modbus_bytes_out": master.bytes_out,
                 "modbus_bytes_in": master.bytes_in}
        if self.meter is not None:
            found["meter_failures"] = self.meter.failures
            found["meter_error"] = _describe(self.meter.last_error)
        return found

    def show(self, state):
        """Contactor closed unless stopped, faulted or without an EV (opened after the
        tick's 0 W write); the status LED blinks while all is well and stays lit otherwise."""
        if self.contactor is not None:
            self.contactor.value(0 if state in (STATE_STOPPED, STATE_FAULT, STATE_NO_EV) else 1)
        if self.led is not None:
            self.led.value(1 if state in (STATE_STOPPED, STATE_FAULT) else self.periods & 1)

    async def watch(self):
        """Mid-tick: read the converter alone and cut at once if its fresh readings call for
        it. Commands nothing otherwise: setpoints and ramps go out with the tick."""
        if self.converter_ok and await self.converter.read():
            again = self._decide(ticks_ms())
            if self.cut_due(again):
                await self._cut(again)

    # The checks are plain methods and the writes coroutines, so a period that writes
    # nothing more creates no coroutine for them (each allocates on the heap).

    async def _cut(self, power):
        if await self.converter.command(power, power != 0):
            self.cut_written(power)

    async def _poll_meter(self, now):
        meter = self.meter
        power = self.pile.tel.power  # the converter's, read this tick
        ok = await meter.poll(now)
        self.meter_polled(now, meter.site_w if ok else None, power)


def _is_cut(new, old):
    """Less power in the same direction, or a reversal: both must not wait."""
    if old > 0:
        return new < old
    if old < 0:
        return new > old
    return False


def _describe(error):
    """A device's last error in a few bytes (its kind, and a Modbus exception's code), or
    None while it answers: the DIAGNOSTICS reply must fit one frame."""
    if error is None:
        return None
    code = getattr(error, "code", None)
    return type(error).__name__ if code is None else "%s %d" % (type(error).__name__, code)
