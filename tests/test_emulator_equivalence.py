"""An emulated pile runs the firmware's own control period (issue 27): the same telemetry
sequence gives it and the firmware's control loop the same applied power at every step.

The firmware side is the board's own `ControlLoop.period()` (pile/loop.py) in this
process: the tick and its transaction, the cut at once on the fresh readings, the meter
when due, the watch half a period later, the event flush. Only its I/O is stood in for:
the converter and the meter are fakes that answer from the script, and the clock is
virtual (the loop's ticks_ms and ticks_us, and an asyncio.sleep_ms that moves it on). So
both sides decide at the same instants with the same readings, and the comparison can
be exact. On the virtual bench (the unix port, pilectl.vbench) it could not: the plant
there runs in real time with continuous physics and Modbus timing, so the instant a
reading reaches a decision is not the script's, and two runs differ by a period here and
there. The synchronous step both sides call is tested under both interpreters in
tests/fw/test_control_step.py.

The script changes the readings half a period before a step's tick, where the firmware
has its watch: a setpoint, a load that falls and rises, a battery temperature crossing
its cutoff and coming back, a meter that stops answering until its reading is stale,
the setpoint expiring, a SOC reaching its floor. The clock starts just below the 30-bit
wrap of ticks_ms, which it passes mid-sequence, as a board's does after 12 days.
"""

import asyncio
import random

import pile.loop as loop_module
import pytest
from pile.app import Pile
from pile.clock import ticks_add, ticks_diff
from pile.meter import NEVER
from pilectl.aggregator.emulator import EmulatedPile

PERIOD_MS = 1000  # the emulator's step, and the tick_ms it configures
HALF_MS = PERIOD_MS // 2
START = ticks_add(0, -10 * PERIOD_MS - 300)  # ticks_ms wraps during period 10
KEY = bytes(range(32))
CAPACITY_WH = 80000  # a step moves at most 3 Wh: the SOC stays at the script's permille

# step: readings from half a period before that step's tick on ("setpoint": (W, ttl s))
SCRIPT = {
    0: {"soc": 600, "battery_temp": 250, "load_w": 3000, "meter_answers": True},
    2: {"setpoint": (-7000, 24)},  # discharge, held to the household load (export cap 0)
    6: {"load_w": 1500},  # the load falls: the next meter reading calls for a cut
    9: {"battery_temp": 560},  # past the 55 degC cutoff: the watch cuts
    12: {"battery_temp": 480},  # below resume, still derating
    15: {"meter_answers": False},  # no more readings: stale 3 s after the last one
    19: {"meter_answers": True},
    22: {"load_w": 4000},
    # the setpoint expires at the watch before step 26
    27: {"setpoint": (-2000, 30), "soc": 205},
    30: {"soc": 200},  # the SOC floor: the watch cuts
    32: {"setpoint": (5000, 30)},  # a charge instead
}
STEPS = 36
# the emulator's model, copied into the firmware's converter readings
READINGS = ("status", "fault_code", "soc", "battery_temp", "converter_temp", "ev_max_charge",
            "ev_max_discharge", "grid_freq", "rated_charge", "rated_discharge")


class Clock:
    def __init__(self):
        self.ms = START

    def now(self):
        return self.ms


class Plant:
    """What the firmware's converter and meter read: the script's readings, the power the
    converter runs at (what it was last told), and the energy that power moved."""

    def __init__(self, tel):
        self.readings = {name: getattr(tel, name) for name in READINGS}
        self.load_w = 0
        self.meter_answers = True
        self.power = 0
        self.moved_wh = 0.0


class FakeConverter:
    def __init__(self, plant, tel):
        self.plant = plant
        self.tel = tel

    async def poll(self, setpoint_w, run):
        self.plant.power = setpoint_w if run else 0
        return self.read_now()

    async def read(self):
        return self.read_now()

    def read_now(self):
        tel = self.tel
        for name, value in self.plant.readings.items():
            setattr(tel, name, value)
        tel.power = self.plant.power
        return True

    async def command(self, setpoint_w, run):
        self.plant.power = setpoint_w if run else 0
        return True

    async def reset_fault(self):
        return True


class FakeMeter:
    """The site meter: the household load plus the converter's power, when it answers."""

    def __init__(self, plant):
        self.plant = plant
        self.site_w = 0
        self._read_at = None

    async def poll(self, now):
        if not self.plant.meter_answers:
            return False
        self.site_w = self.plant.load_w + self.plant.power
        self._read_at = now
        return True

    def age_ms(self, now):
        return NEVER if self._read_at is None else ticks_diff(now, self._read_at)


def emulated_pile():
    emulated = EmulatedPile("equiv-emu", KEY, None, random.Random(1))
    emulated.pile.cfg.update({"site_export_limit_w": 0})  # discharge follows the load
    emulated.capacity_wh = CAPACITY_WH
    return emulated


def observed(pile, power):
    """What a pile does just after a tick: the power its converter runs at, and what its
    controller decided and why."""
    ctl = pile.ctl
    return {"power": power, "applied": ctl.applied, "state": ctl.state,
            "reasons": ctl.reasons, "site_w": pile.site_w}


def changes(step):
    return SCRIPT.get(step, {})


def run_emulator():
    """Step after step, each after the script's readings: what the emulated pile does, the
    energy its model moved in the step, its event log, and the emulated pile."""
    emulated = emulated_pile()
    clock = Clock()
    emulated.pile.now = clock.now
    tel = emulated.pile.tel
    readings = {}
    steps, moved = [], []
    for step in range(STEPS):
        tick = ticks_add(START, step * PERIOD_MS)
        clock.ms = ticks_add(tick, -HALF_MS)  # where the firmware has its watch
        found = changes(step)
        readings.update(found)
        soc = readings["soc"]
        tel.battery_temp = readings["battery_temp"]
        emulated.load_w = readings["load_w"]
        emulated.meter_answers = readings["meter_answers"]
        if "setpoint" in found:
            emulated.pile.setpoint(*found["setpoint"])
        emulated.energy_wh = before = emulated.capacity_wh * (soc + 0.5) / 1000
        clock.ms = tick
        emulated.step(tick)
        moved.append(emulated.energy_wh - before)
        steps.append(observed(emulated.pile, tel.power))
    return steps, moved, emulated.pile.events.since(0, 100), emulated


def run_firmware(monkeypatch):
    """The firmware's loop, period after period, fed the same script: the same figures,
    taken just after each tick, and the energy the converter moved from tick to tick."""
    template = emulated_pile()
    pile = Pile("equiv-emu")
    pile.set_key(KEY)
    pile.cfg.update(template.pile.cfg.values)
    plant = Plant(template.pile.tel)
    converter, meter = FakeConverter(plant, pile.tel), FakeMeter(plant)
    clock = Clock()
    pile.now = clock.now
    monkeypatch.setattr(loop_module, "ticks_ms", clock.now)
    monkeypatch.setattr(loop_module, "ticks_us", lambda: clock.ms * 1000 % (1 << 30))
    loop = loop_module.ControlLoop(pile, converter, meter)
    steps, moved = [], []
    sleeps = [0]

    def script(step):
        found = changes(step)
        for name in ("soc", "battery_temp"):
            if name in found:
                plant.readings[name] = found[name]
        plant.load_w = found.get("load_w", plant.load_w)
        plant.meter_answers = found.get("meter_answers", plant.meter_answers)
        if "setpoint" in found:
            pile.setpoint(*found["setpoint"])

    async def sleep_ms(ms):
        """The loop's two waits a period: the first starts just after the tick and ends at
        the watch, where the script changes the readings for the next step. The converter
        runs at its power for the time slept."""
        mid = sleeps[0] % 2 == 0
        sleeps[0] += 1
        if mid:
            steps.append(observed(pile, plant.power))
            moved.append(plant.moved_wh)
            plant.moved_wh = 0.0
        plant.moved_wh += plant.power * (ms / 1000) / 3600
        clock.ms = ticks_add(clock.ms, ms)
        if mid:
            script(len(steps))
        await asyncio.sleep(0)

    monkeypatch.setattr(asyncio, "sleep_ms", sleep_ms)
    script(0)
    converter.read_now()  # the first decision sees the readings the emulated pile's does

    async def periods():
        for _ in range(STEPS):
            await loop.period()

    asyncio.run(periods())
    return steps, moved, pile.events.since(0, 100), loop.cuts


def test_an_emulated_pile_applies_what_the_firmware_does(monkeypatch):
    emulated, emulated_wh, emulated_log, emulated_pile = run_emulator()
    firmware, firmware_wh, firmware_log, firmware_cuts = run_firmware(monkeypatch)
    assert [s["power"] for s in emulated] == [s["power"] for s in firmware]
    for step, (mine, theirs) in enumerate(zip(emulated, firmware, strict=True)):
        assert mine == theirs, step
    # the power between ticks too: the watch's cuts
    assert emulated_wh == pytest.approx(firmware_wh, abs=1e-9)
    assert emulated_log == firmware_log
    assert emulated_pile.control.cuts == firmware_cuts >= 4
