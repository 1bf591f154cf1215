"""The E-stop input: latched on the press itself, released only once the input clears.

A press sets the latch at once, from a pin interrupt on the boards (`press` is an
allocation-free IRQ handler) or from the unix port's stand-in, which watches its
input every few milliseconds; either way the control loop's E-stop task wakes and
writes the cut straight away, so a 20 ms press is never missed and the cut goes out
within one Modbus transaction. The input's level, debounced, keeps a release
refused while the button is still held.
"""

import asyncio

from micropython import const

from pile.debounce import Debounced

_POLL_MS = const(5)  # the unix stand-in's look at its input: a pin interrupt's latency


class Estop:
    """`pin` has `value()`; `interrupts` says the HAL calls `press` from the pin's IRQ."""

    def __init__(self, pin, interrupts=False, active_low=True):
        self.level = Debounced(pin, active_low=active_low)
        self.latched = self.level.active  # held at boot counts as a press
        self._interrupts = interrupts
        self._flag = asyncio.ThreadSafeFlag()

    def press(self, _pin=None):
        """The pin's interrupt handler: latch, and wake the E-stop task."""
        self.latched = True
        self._flag.set()

    async def wait_press(self):
        """Until the next press: the interrupt's flag, or the stand-in's quick look."""
        if self._interrupts:
            await self._flag.wait()
            return
        was = self.level.read()
        while True:
            await asyncio.sleep_ms(_POLL_MS)
            now = self.level.read()
            if now and not was:
                self.press()
                return
            was = now

    def update(self, now):
        """For each decision: True while latched (once) or while the input is held."""
        held = self.level.update(now)
        if self.latched:
            self.latched = False
            return True
        return held
