"""The board's contactor and status LED follow the pile's state (`ControlLoop.show`), on
the loop the firmware builds (CPython and MicroPython).

The pins are stand-ins recording their level: no GPIO here.
"""

from fwtest import RecordingHal, recording_board
from pile import control
from pile.app import Pile
from pile.firmware import build_loop


def loop_with_outputs():
    hal = RecordingHal()
    loop = build_loop(Pile("outputs-001"), hal, recording_board())
    return loop, hal.outputs["contactor_pin"], hal.outputs["status_led_pin"]


def test_contactor_opens_when_stopped_faulted_or_unplugged():
    loop, contactor, _ = loop_with_outputs()
    for state in (control.STATE_IDLE, control.STATE_CHARGING, control.STATE_DISCHARGING):
        loop.show(state)
        assert contactor.level == 1
    for state in (control.STATE_STOPPED, control.STATE_FAULT, control.STATE_NO_EV):
        loop.show(state)
        assert contactor.level == 0


def test_led_blinks_while_well_and_stays_lit_when_stopped_or_faulted():
    loop, _, led = loop_with_outputs()
    levels = []
    for period in range(4):
        loop.periods = period
        loop.show(control.STATE_CHARGING)
        levels.append(led.level)
    assert levels == [0, 1, 0, 1]
    for state in (control.STATE_STOPPED, control.STATE_FAULT):
        for period in range(2):
            loop.periods = period
            loop.show(state)
            assert led.level == 1
