"""Watchdog supervisor and debounced inputs (CPython and MicroPython).

The watchdog and the pin are stand-ins: real GPIO and a real WDT cannot run here.
"""

from fwtest import CountingWatchdog
from pile.debounce import Debounced
from pile.supervisor import Supervisor


class LevelPin:
    def __init__(self, level):
        self.level = level

    def value(self):
        return self.level


def test_watchdog_fed_only_when_every_task_checked_in():
    wdt = CountingWatchdog()
    sup = Supervisor(wdt)
    control, link, meter = sup.task(), sup.task(), sup.task()
    sup.check_in(control)
    sup.check_in(control)
    sup.check_in(link)
    assert wdt.feeds == 0
    sup.check_in(meter)
    assert wdt.feeds == 1
    for _ in range(5):  # the meter task hangs: no more feeding
        sup.check_in(control)
        sup.check_in(link)
    assert wdt.feeds == 1


def test_estop_changes_only_after_stable_period():
    pin = LevelPin(1)  # pulled up: released
    estop = Debounced(pin, stable_ms=20)
    assert not estop.update(0)
    pin.level = 0
    assert not estop.update(5)
    pin.level = 1  # bounce
    assert not estop.update(10)
    pin.level = 0
    assert not estop.update(15)
    assert not estop.update(30)
    assert estop.update(35)
    pin.level = 1
    assert estop.update(40)
    assert not estop.update(60)


def test_estop_pressed_at_boot_is_active_at_once():
    assert Debounced(LevelPin(0)).active
    assert not Debounced(LevelPin(1), active_low=True).active
    assert Debounced(LevelPin(1), active_low=False).active
