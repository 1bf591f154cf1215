"""CPython stand-in for MicroPython's `micropython` module.

Firmware modules write `from micropython import const` (aioble style); on CPython,
where host tools and tests import them, const() is the identity.
"""


def const(value):
    return value
