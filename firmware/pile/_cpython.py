"""CPython stand-in for MicroPython's `micropython` module, installed by pile/__init__.py.

Firmware modules write `from micropython import const` (aioble style) so mpy-cross folds
their constants; on CPython, where host tools and tests import them, const() is the
identity. Never imported on a board.
"""


def const(value):
    return value
