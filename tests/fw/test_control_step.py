"""A control period's rules without I/O (`pile.loop.ControlStep`): the decision with the
meter's reading moved on, the stale-meter rule, the cut at once, the meter's schedule and
the event log (CPython and MicroPython).

The board's `ControlLoop` runs these between its Modbus transactions and the pile
emulator with its battery model; here the converter and the meter are plain values.
"""

from fwtest import SITE_LIMIT, RecordingHal, recording_board, telemetry
from pile import control, events, limits
from pile.app import Pile
from pile.clock import ticks_add, ticks_diff
from pile.firmware import build_loop
from pile.loop import ControlLoop, ControlStep
from pile.meter import NEVER
from pile.telemetry import STATUS_READY

TICK = 250
WRAP = ticks_add(0, -600)  # ticks_ms wraps 600 ms later, as a board's does every 12 days


class Period:
    """A ControlStep run as the board runs it, on a clock the test owns: the converter
    takes every write (`power`) and reads back what it runs at; the meter shows the
    household load plus that power while it answers."""

    def __init__(self, metered=True, start=0, **changes):
        pile = Pile("step-001")
        values = {"site_import_limit_w": SITE_LIMIT}
        values.update(changes)
        pile.cfg.update(values)
        pile.tel = telemetry()
        self.pile = pile
        self.ctl = pile.ctl
        self.step = ControlStep(pile, metered)
        self.now = start
        self.power = 0  # W the converter runs at
        self.load_w = 2000
        self.meter_answers = True
        self.site_w = 0
        self.read_at = None

    def age(self):
        return NEVER if self.read_at is None else ticks_diff(self.now, self.read_at)

    def decide(self):
        return self.step.decide(self.now, self.site_w, self.age())

    def read(self):
        self.pile.tel.power = self.power

    def look(self):
        """Decide with fresh readings; write at once when due. True when written."""
        step = self.step
        again = self.decide()
        if step.cut_due(again):
            self.power = again
            step.cut_written(again)
            return True
        return False

    def tick(self, ms=TICK):
        """The tick: decide, the transaction, the look at its fresh readings, the meter."""
        self.now = ticks_add(self.now, ms)
        step = self.step
        power = self.decide()
        self.power = power
        self.read()
        step.polled(True, power)
        self.look()
        if step.meter_due(self.now):
            reading = None
            if self.meter_answers:
                reading = self.site_w = self.load_w + self.power
                self.read_at = self.now
            step.meter_polled(self.now, reading, self.pile.tel.power)
        return self.power

    def watch(self, ms=TICK // 2):
        """Half a period after the tick: read the converter, cut when due."""
        self.now = ticks_add(self.now, ms)
        self.read()
        return self.look()

    def ticks(self, count, ms=TICK):
        for _ in range(count):
            self.tick(ms)
        return self.power

    def logged(self, first=0):
        return [entry[2:] for entry in self.pile.events.since(first, 100)]


def test_the_first_decision_waits_for_the_converter():
    run = Period()
    assert run.decide() == 0 and run.ctl.state == control.STATE_BOOT
    assert not run.step.converter_ok
    run.step.polled(True, 0)
    assert run.step.converter_ok
    run.decide()
    assert run.ctl.state == control.STATE_IDLE


def test_a_failed_transaction_counts_toward_a_converter_fault():
    run = Period()
    run.tick()
    run.ctl.set_setpoint(3000, 60, run.now)
    run.ticks(4)
    assert run.step.commanded == 3000
    for _ in range(run.pile.cfg.converter_fault_polls):
        run.now = ticks_add(run.now, TICK)
        power = run.decide()
        run.step.polled(False, power)
        assert run.step.commanded == 3000  # what the converter last took
    run.decide()
    assert run.ctl.state == control.STATE_FAULT
    assert [events.EVENT_FAULT, 0] in run.logged()


def test_less_power_and_reversals_are_written_at_once_more_waits_for_the_tick():
    run = Period()
    run.tick()
    run.ctl.set_setpoint(6000, 60, run.now)
    assert run.ticks(5) == 6000
    step = run.step
    assert not step.cut_due(6000) and not step.cut_due(7000)  # the same, or a rise: the tick
    assert step.cut_due(4000) and step.cut_due(0) and step.cut_due(-1000)
    assert step.cuts == 0
    run.pile.tel.battery_temp = 560  # past the cutoff between the tick and the watch
    assert run.watch() and run.power == 0
    assert step.cuts == 1 and step.commanded == 0
    assert run.ctl.reasons & limits.REASON_BATTERY_HOT


def test_a_moved_frequency_response_is_written_at_once_and_is_no_cut():
    run = Period(freq_response="droop", freq_response_ms=0)
    run.tick()
    run.ctl.set_setpoint(5000, 60, run.now)
    assert run.ticks(4) == 5000
    run.pile.tel.grid_freq = 5020  # 50.20 Hz: past the deadband, charge more
    assert run.watch()
    assert run.power > 5000 and run.ctl.freq_w == run.power - 5000
    assert run.step.cuts == 0
    run.pile.tel.grid_freq = 5000
    assert run.watch() and run.power == 5000  # the response gone: a cut
    assert run.step.cuts == 1


def test_the_meter_reading_is_moved_on_by_the_piles_own_change_since():
    run = Period(site_export_limit_w=0, meter_period_ms=TICK)  # read every tick
    run.load_w = 3000
    run.tick()  # the meter is read: 3000 W, the pile idle
    run.ctl.set_setpoint(-7000, 60, run.now)
    run.ticks(4)
    assert run.power == -3000  # discharge follows the load: no export
    assert run.site_w == 0  # the last reading: the load, all of it from the pile
    run.decide()
    assert run.ctl.inputs.site_w == 0
    run.pile.tel.power = -1000  # the converter's own change since the reading
    run.decide()
    assert run.ctl.inputs.site_w == 2000  # the load stays what the meter showed
    run.read()
    run.load_w = 1000  # the load falls by 2000: the tick's reading shows export
    run.tick()
    assert run.power == -3000 and run.site_w == -2000
    run.decide()
    assert run.ctl.inputs.site_w == -2000 + -2000  # and by its last fall once more
    assert run.watch() and run.power == 0  # a load of -1000 W leaves nothing to discharge


def test_a_stale_meter_is_lost_then_back_with_one_event_each():
    run = Period(site_export_limit_w=11000, meter_period_ms=TICK)  # read every tick
    run.ticks(4)  # read at each
    assert run.pile.site_w == run.site_w == 2000
    first = run.pile.events.next_index
    run.meter_answers = False
    run.ticks(11)  # the last reading is 2750 ms old
    assert run.pile.site_w == 2000 and run.logged(first) == []
    run.tick()  # 3000 ms: not fresh (age < meter_stale_s), but the envelope's rule is
    # age > meter_stale_s: it drops the reading one decision later
    assert run.pile.site_w is None and run.logged(first) == [[events.EVENT_METER_LOST, 0]]
    assert not run.ctl.reasons & limits.REASON_METER_LOST
    run.watch()
    assert run.ctl.reasons & limits.REASON_METER_LOST
    run.ticks(8)
    assert len(run.logged(first)) == 1
    run.meter_answers = True
    run.tick()  # read after the decisions of this tick
    assert run.pile.site_w is None
    run.watch()
    assert run.pile.site_w == 2000
    assert run.logged(first) == [[events.EVENT_METER_LOST, 0], [events.EVENT_METER_BACK, 0]]


def test_a_meter_that_never_answers_is_reported_lost_after_the_stale_time():
    run = Period()
    run.meter_answers = False
    run.ticks(12)  # uptime 2 s: the first decision was at the first tick
    assert run.age() == NEVER and run.logged(1) == [[events.EVENT_EV_PLUGGED, 0]]
    run.ticks(1)  # 3 s
    assert run.logged(2) == [[events.EVENT_METER_LOST, 0]]


def test_without_a_meter_the_site_is_always_lost_and_never_read():
    run = Period(metered=False)
    run.site_w, run.read_at = 12345, 0  # ignored: no meter is wired
    run.ticks(20)
    assert run.ctl.reasons & limits.REASON_METER_LOST
    assert run.ctl.inputs.site_w is None and run.ctl.inputs.meter_age_ms == NEVER
    assert run.pile.site_w is None
    assert not run.step.meter_due(run.now)
    codes = [entry[0] for entry in run.logged()]
    assert events.EVENT_METER_LOST not in codes and events.EVENT_METER_BACK not in codes


def test_the_meter_is_due_at_the_first_tick_then_every_period_across_the_wrap():
    run = Period(start=WRAP, meter_period_ms=1000)
    step = run.step
    assert step.meter_due(run.now)
    read = []
    for _ in range(12):  # 3 s, through the wrap of ticks_ms
        run.tick()
        if run.read_at == run.now:
            read.append(run.now)
    assert len(read) == 3
    assert [ticks_diff(read[i + 1], read[i]) for i in range(2)] == [1000, 1000]
    assert run.now < WRAP  # it wrapped


def test_the_events_of_a_session():
    run = Period(site_export_limit_w=11000)
    run.tick()
    first = run.pile.events.next_index
    run.ctl.set_setpoint(4000, 2, run.now)
    run.ticks(8)  # 2 s: the setpoint expires
    assert run.power == 0
    assert run.logged(first) == [[events.EVENT_SETPOINT_EXPIRED, 0]]
    run.pile.tel.status = STATUS_READY  # unplugged
    run.watch()
    assert run.logged(first)[1:] == [[events.EVENT_EV_UNPLUGGED, 0]]
    assert run.ctl.state == control.STATE_NO_EV


def test_a_limit_at_its_edge_is_logged_at_most_every_10_s():
    run = Period()
    run.tick()
    first = run.pile.events.next_index
    run.ctl.set_setpoint(3000, 3600, run.now)
    for period in range(120):  # 30 s, a derating that comes and goes every period
        run.pile.tel.battery_temp = 460 if period % 2 else 250
        run.tick()
    limits_logged = [entry for entry in run.logged(first) if entry[0] == events.EVENT_LIMITS]
    assert 2 <= len(limits_logged) <= 4


def test_the_boards_loop_is_a_control_step():
    loop = build_loop(Pile("step-002"), RecordingHal(), recording_board())
    assert isinstance(loop, ControlStep) and loop.metered
    assert not ControlLoop(Pile("step-003"), converter=None).metered
