"""One pile's recent past as its link saw it, for the live page's detail (api.py):
its last TELEMETRY samples and what happened on its link, in words.

Bounded whatever the fleet: `SAMPLES` samples of 8 whole numbers in one array (4 bytes
each: 1.9 KB a pile, 19 MB for 10,000 piles once full) and `EVENTS` events.
A sample is taken as each TELEMETRY comes (one array write, no object kept), so the
dispatch period pays nothing for it.
"""

import time
from array import array
from collections import deque

from pilectl import names

SAMPLES = 60  # TELEMETRY samples kept: a minute at a telemetry period of 1 s
EVENTS = 50
_NONE = -(2**31)  # a field the pile did not send, or no setpoint sent yet
# a sample: monotonic time in 0.1 s since _ORIGIN, then these TELEMETRY fields and the
# setpoint sent last
_FIELDS = (3, 10, 4, 2, 9, 11)
FIELD_NAMES = ("power_w", "applied_w", "soc_permille", "state", "reasons", "ttl_left_s",
               "setpoint_w")
_WIDTH = 1 + len(FIELD_NAMES)
_ORIGIN = time.monotonic()
_STATE, _REASONS = 2, 9


class Recent:
    def __init__(self):
        self.samples = array("i")  # grows to SAMPLES * _WIDTH, then a ring
        self.next = 0  # the sample to write next, once full
        self.events = deque(maxlen=EVENTS)  # (epoch s, text)
        self.refused_at = None  # monotonic time of the pile's latest ERROR
        self.firmware = None  # as its latest HELLO said
        self._state = self._reasons = None

    def telemetry(self, at, fields, setpoint_w):
        """Keep one TELEMETRY (at monotonic `at`); a change of state or reasons is an
        event."""
        values = array("i", [int((at - _ORIGIN) * 10)] + [
            _whole(fields.get(key)) for key in _FIELDS] + [_whole(setpoint_w)])
        if len(self.samples) < SAMPLES * _WIDTH:
            self.samples.extend(values)
        else:
            start = self.next * _WIDTH
            self.samples[start:start + _WIDTH] = values
            self.next = (self.next + 1) % SAMPLES
        state, reasons = fields.get(_STATE), fields.get(_REASONS)
        if state is not None:
            if self._state is not None and state != self._state:
                self.event(f"{_state_word(self._state)} → {_state_word(state)}")
            self._state = state
        if isinstance(reasons, int):
            if self._reasons is not None and reasons != self._reasons:
                gone = names.reasons(self._reasons & ~reasons)
                came = names.reasons(reasons & ~self._reasons)
                self.event("reasons: " + ", ".join([f"+{n}" for n in came] +
                                                   [f"−{n}" for n in gone]))
            self._reasons = reasons

    def event(self, text):
        self.events.append((round(time.time(), 1), text))

    def series(self):
        """The samples kept, oldest first: dicts with `t` (epoch s) and FIELD_NAMES."""
        count = len(self.samples) // _WIDTH
        order = range(count) if count < SAMPLES else \
            [(self.next + n) % SAMPLES for n in range(SAMPLES)]
        epoch = time.time() - (time.monotonic() - _ORIGIN)
        found = []
        for n in order:
            row = self.samples[n * _WIDTH:(n + 1) * _WIDTH]
            sample = {"t": round(epoch + row[0] / 10, 1)}
            sample.update((name, None if value == _NONE else value)
                          for name, value in zip(FIELD_NAMES, row[1:], strict=True))
            found.append(sample)
        return found


def _whole(value):
    """`value` as the array keeps it: a 32-bit whole number, else _NONE."""
    if isinstance(value, int) and _NONE < value < 2**31:
        return value
    return _NONE


def _state_word(state):
    return names.STATES.get(state, f"state {state}")
