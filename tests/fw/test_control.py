"""Setpoint arbitration, ramps, expiry and the state machine (CPython and MicroPython)."""

from fwtest import RATED, config, raises, telemetry
from pile import control, limits
from pile.clock import ticks_add
from pile.telemetry import STATUS_EV_CONNECTED, STATUS_FAULT, STATUS_READY

TICK = 250


class Run:
    """A controller deciding once a control period, on a clock the test owns."""

    def __init__(self, cfg=None, start=0, **tel):
        self.ctl = control.Controller(cfg or config())
        self.now = start
        self.tel = telemetry(**tel)
        self.site_w = 5000
        self.meter_age_ms = 0
        self.converter_ok = True
        self.estop = False
        self.step(0)

    def step(self, ms=TICK):
        self.now = ticks_add(self.now, ms)
        return self.ctl.decide(self.now, self.tel, self.converter_ok, self.site_w,
                               self.meter_age_ms, self.estop)

    def steps(self, count, ms=TICK):
        for _ in range(count):
            applied = self.step(ms)
        return applied

    def setpoint(self, power, ttl_s=60, **extra):
        return self.ctl.set_setpoint(power, ttl_s, self.now, **extra)


def test_boot_then_idle_with_no_setpoint():
    ctl = control.Controller(config())
    assert ctl.state == control.STATE_BOOT
    run = Run()
    assert run.ctl.state == control.STATE_IDLE
    assert run.ctl.applied == 0
    assert run.ctl.reasons & limits.REASON_SETPOINT_EXPIRED


def test_charge_ramps_at_configured_rate():
    run = Run()
    target, _ = run.setpoint(8000)
    assert target == 8000
    assert run.step() == 1250  # 5000 W/s over 250 ms
    assert run.ctl.reasons & limits.REASON_RAMPING
    assert run.steps(5) == 7500
    assert run.step() == 8000
    assert not run.ctl.reasons & limits.REASON_RAMPING
    assert run.ctl.state == control.STATE_CHARGING


def test_decreases_and_reversals_cut_at_once():
    run = Run()
    run.setpoint(8000)
    run.steps(10)
    run.setpoint(2000)
    assert run.step() == 2000
    run.setpoint(-4000)
    assert run.step() == -1250  # cut to zero, then ramp from there
    assert run.ctl.state == control.STATE_DISCHARGING
    run.setpoint(0)
    assert run.step() == 0
    assert run.ctl.state == control.STATE_IDLE


def test_setpoint_is_clamped_into_the_envelope_and_acked():
    run = Run()
    target, reasons = run.setpoint(-9000)
    assert target == -5000  # export cap 0: discharge covers the 5 kW load only
    assert reasons & limits.REASON_SITE_EXPORT_CAP
    assert run.steps(8) == -5000


def test_ack_never_promises_a_discharge_a_new_reserve_forbids():
    run = Run(soc=600)
    target, reasons = run.setpoint(-3000, departure_s=7200, reserve_soc=70)
    assert target == 0 and reasons & limits.REASON_DEPARTURE_RESERVE
    assert run.steps(4) == 0
    run.setpoint(0, departure_s=7200, reserve_soc=40)
    run.step()  # the lower reserve is in the envelope from this tick on
    target, _ = run.setpoint(-3000)
    assert target == -3000


def test_safety_cut_applies_in_the_same_tick():
    run = Run()
    run.setpoint(-5000)
    run.steps(8)
    run.tel.battery_temp = 550
    assert run.step() == 0
    assert run.ctl.reasons & limits.REASON_BATTERY_HOT


def test_setpoint_expires_after_ttl_then_fallback_idle():
    run = Run()
    run.setpoint(4000, ttl_s=2)
    assert run.ctl.ttl_left_s(run.now) == 2
    run.steps(7)  # 1750 ms
    assert run.ctl.applied == 4000
    assert run.step() == 0  # 2000 ms: expired
    assert not run.ctl.setpoint_live
    assert run.ctl.reasons & limits.REASON_SETPOINT_EXPIRED
    assert run.ctl.ttl_left_s(run.now) == 0


def test_fallback_charge_charges_within_the_envelope():
    run = Run(config(fallback="charge"))
    assert run.steps(12) == RATED


def test_expiry_survives_tick_counter_wrap():
    start = ticks_add(0, -1000)  # the ticks counter wraps one second from now
    run = Run(start=start)
    run.setpoint(3000, ttl_s=2)
    run.steps(4)
    assert run.ctl.applied == 3000
    run.steps(4)
    assert run.ctl.applied == 0


def test_three_failed_polls_fault_then_recover_with_live_setpoint():
    run = Run()
    run.setpoint(3000, ttl_s=60)
    run.steps(4)
    run.converter_ok = False
    run.steps(2)
    assert run.ctl.state == control.STATE_CHARGING
    assert run.step() == 0
    assert run.ctl.state == control.STATE_FAULT
    assert run.ctl.reasons & limits.REASON_CONVERTER_FAULT
    run.converter_ok = True
    assert run.step() == 1250  # the setpoint is still live: ramp back up
    assert run.ctl.state == control.STATE_CHARGING


def test_recovery_does_not_revive_an_expired_setpoint():
    run = Run()
    run.setpoint(3000, ttl_s=1)
    run.converter_ok = False
    run.steps(8)
    run.converter_ok = True
    assert run.step() == 0
    assert run.ctl.state == control.STATE_IDLE


def test_converter_fault_bit_is_fault_state():
    run = Run(status=STATUS_READY | STATUS_EV_CONNECTED | STATUS_FAULT)
    run.setpoint(3000)
    assert run.step() == 0
    assert run.ctl.state == control.STATE_FAULT


def test_stop_latches_until_released():
    run = Run()
    run.setpoint(3000)
    run.steps(4)
    run.ctl.stop()
    assert run.ctl.target == 0  # what the COMMAND's ACK reports, before the next tick
    assert run.ctl.reasons & limits.REASON_STOPPED
    assert run.step() == 0
    assert run.ctl.state == control.STATE_STOPPED
    run.setpoint(3000)
    assert run.steps(4) == 0
    assert run.ctl.release()
    assert not run.ctl.reasons & limits.REASON_STOPPED
    assert run.step() == 1250


def test_the_ack_between_a_stop_or_release_and_the_next_tick_tells_the_truth():
    run = Run()
    run.ctl.stop()
    assert run.setpoint(3000)[0] == 0  # stopped: no tick has passed, the ACK says 0 W
    assert run.ctl.release()
    assert run.setpoint(-2000)[0] == -2000  # released: the ACK promises what the tick applies
    assert run.step() < 0


def test_estop_input_latches_and_blocks_release_while_active():
    run = Run()
    run.setpoint(3000)
    run.estop = True
    assert run.step() == 0
    assert not run.ctl.release()
    run.estop = False
    assert run.step() == 0
    assert run.ctl.state == control.STATE_STOPPED
    assert run.ctl.release()
    assert run.step() > 0


def test_no_ev_state_and_departure_forgotten_on_unplug():
    run = Run()
    run.setpoint(0, departure_s=3600, reserve_soc=80)
    assert run.ctl.inputs.reserve_x10 == 800
    run.tel.status = STATUS_READY
    assert run.step() == 0
    assert run.ctl.state == control.STATE_NO_EV
    assert run.ctl.inputs.reserve_x10 == limits.NO_DEPARTURE


def test_an_unplug_ends_the_session_and_the_next_car_starts_idle():
    run = Run()
    run.setpoint(-3000, ttl_s=600, departure_s=7200, reserve_soc=40)
    assert run.steps(4) == -3000
    run.tel.status = STATUS_READY  # unplugged
    assert run.step() == 0 and run.ctl.sessions_ended == 1
    assert not run.ctl.setpoint_live and run.ctl.inputs.reserve_x10 == limits.NO_DEPARTURE
    run.tel.status = STATUS_READY | STATUS_EV_CONNECTED  # the next car, at 35 %
    run.tel.soc = 350
    assert run.steps(20) == 0  # nothing inherited: idle until the host asks again
    assert run.ctl.state == control.STATE_IDLE and run.ctl.ttl_left_s(run.now) == 0
    assert run.ctl.reasons & limits.REASON_SETPOINT_EXPIRED
    run.tel.status = STATUS_READY
    run.step()
    assert run.ctl.sessions_ended == 1  # no session, nothing ended


def test_the_ack_tells_a_charge_that_a_departure_forces():
    run = Run(soc=400)
    target, reasons = run.setpoint(-5000, departure_s=3000, reserve_soc=60)
    assert target == RATED and reasons & limits.REASON_DEPARTURE_RESERVE
    assert run.step() == 1250 and run.ctl.target == RATED  # and it does: ramping to it


def test_no_setpoint_before_the_converter_was_read():
    ctl = control.Controller(config())
    with raises(control.NotReady):
        ctl.set_setpoint(1000, 60, 0)
    assert not ctl.setpoint_live
    ctl.decide(0, telemetry(), False, 5000, 0)  # the first poll failed: still nothing known
    with raises(control.NotReady):
        ctl.set_setpoint(1000, 60, 0)


def test_departure_reserve_forces_charge_over_a_discharge_request():
    run = Run(soc=400)
    run.setpoint(-5000, departure_s=7200, reserve_soc=60)  # 12 kWh needs ~3930 s at 11 kW
    assert run.step() == 0  # below reserve: no discharge, time still ample
    run2 = Run(soc=400)
    run2.setpoint(-5000, departure_s=4000, reserve_soc=60)
    run2.step()
    assert run2.ctl.target == RATED
    assert run2.ctl.reasons & limits.REASON_DEPARTURE_RESERVE


def test_departure_uses_config_reserve_by_default():
    run = Run()
    run.setpoint(0, departure_s=3600)
    assert run.ctl.inputs.reserve_x10 == 500


def test_out_of_range_setpoints_are_refused_and_change_nothing():
    run = Run()
    run.setpoint(2000)
    bad = (
        {"power": 2000, "ttl_s": 0},
        {"power": 2000, "ttl_s": 3601},
        {"power": 2000000, "ttl_s": 10},
        {"power": 2000, "ttl_s": 10, "departure_s": -5},
        {"power": 2000, "ttl_s": 10, "departure_s": 3600, "reserve_soc": 101},
        {"power": 2000, "ttl_s": 10, "reserve_soc": 60},
        {"power": "2000", "ttl_s": 10},
    )
    for fields in bad:
        with raises(ValueError):
            run.ctl.set_setpoint(now=run.now, **fields)
        assert run.ctl.setpoint == 2000
        assert run.ctl.inputs.reserve_x10 == limits.NO_DEPARTURE
