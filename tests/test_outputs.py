"""The board's contactor and status LED follow the pile's state (pile/firmware.py).

The pins are stand-ins recording their level: no GPIO here.
"""

from pile import control
from pile.firmware import Firmware


class RecordingPin:
    def __init__(self):
        self.level = None

    def value(self, level):
        self.level = level


class Outputs:
    def __init__(self):
        self.contactor = RecordingPin()
        self.led = RecordingPin()


def test_contactor_opens_when_stopped_faulted_or_unplugged():
    board = Outputs()
    for state in (control.IDLE, control.CHARGING, control.DISCHARGING):
        Firmware.show(board, state, 1)
        assert board.contactor.level == 1
    for state in (control.STOPPED, control.FAULT, control.NO_EV):
        Firmware.show(board, state, 1)
        assert board.contactor.level == 0


def test_led_blinks_while_well_and_stays_lit_when_stopped_or_faulted():
    board = Outputs()
    levels = []
    for tick in range(4):
        Firmware.show(board, control.CHARGING, tick)
        levels.append(board.led.level)
    assert levels == [0, 1, 0, 1]
    for state in (control.STOPPED, control.FAULT):
        for tick in range(2):
            Firmware.show(board, state, tick)
            assert board.led.level == 1
