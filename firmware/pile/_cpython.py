"""CPython stand-ins for what MicroPython has built in.

Firmware modules write `from micropython import const` (aioble style) so mpy-cross folds
their constants; on CPython, where host tools and tests import them, const() is the
identity: `install()`, which pile/__init__.py runs, is what importing the firmware needs
and no more. `pile.native` is native code CPython cannot run: importing it fails, as on a
port with no native emitter, and the bytecode twins in pile.crc and pile.cobs run
instead. `asyncio.sleep_ms` and `asyncio.wait_for_ms` are MicroPython's: only what runs
the firmware's own coroutines on CPython (the tests: tests/conftest.py) adds them to
asyncio with `install_asyncio()`; host tools never do, so their asyncio stays CPython's.
Never imported on a board.
"""

import asyncio
import sys


def const(value):
    return value


def _sleep_ms(ms):
    return asyncio.sleep(ms / 1000)


def _wait_for_ms(awaitable, ms):
    return asyncio.wait_for(awaitable, ms / 1000)


def install():
    sys.modules["micropython"] = sys.modules[__name__]
    sys.modules["pile.native"] = None  # viper code: MicroPython's alone (pile/native.py)


def install_asyncio():
    if not hasattr(asyncio, "sleep_ms"):
        asyncio.sleep_ms = _sleep_ms
    if not hasattr(asyncio, "wait_for_ms"):
        asyncio.wait_for_ms = _wait_for_ms
