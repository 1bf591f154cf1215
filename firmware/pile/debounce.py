"""A digital input (E-stop, door switch) that only changes state after a stable period.

Takes any object with `value()` (a machine.Pin on the boards), sampled every
decision of the control loop: contact bounce cannot toggle the stop latch.
"""

from pile.clock import ticks_diff


class Debounced:
    def __init__(self, pin, stable_ms=20, active_low=True):
        self._pin = pin
        self._stable_ms = stable_ms
        self._active_low = active_low
        self.active = self.read()
        self._candidate = self.active
        self._since = 0

    def read(self):
        """The input's level now, undebounced."""
        return bool(self._pin.value()) != self._active_low

    def update(self, now):
        """Sample the pin at ticks `now`; return the debounced state."""
        level = self.read()
        if level != self._candidate:
            self._candidate = level
            self._since = now
        elif level != self.active and ticks_diff(now, self._since) >= self._stable_ms:
            self.active = level
        return self.active
