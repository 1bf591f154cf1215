"""Wrapping ticks (ms, us): MicroPython's own, or the same arithmetic on CPython.

Tiny shim (microdot style) so pure modules and their tests run on both
interpreters. The CPython version wraps at 2**30 like the boards do, so
wrap-around is exercised in host tests too.
"""

try:
    from time import ticks_add, ticks_diff, ticks_ms, ticks_us
except ImportError:  # CPython: host tools and tests
    import time as _time

    _PERIOD = 1 << 30
    _HALF = _PERIOD >> 1

    def ticks_ms():
        return int(_time.monotonic() * 1000) % _PERIOD

    def ticks_us():
        return int(_time.monotonic() * 1000000) % _PERIOD

    def ticks_add(ticks, delta):
        return (ticks + delta) % _PERIOD

    def ticks_diff(a, b):
        return ((a - b + _HALF) % _PERIOD) - _HALF


__all__ = ("ticks_add", "ticks_diff", "ticks_ms", "ticks_us")
