"""The unix port's hardware: serial devices (ptys, USB adapters) opened as raw lines.

DESIGN section 3: open unbuffered, make the line raw, then VMIN = VTIME = 0 so
an asyncio stream awaits data without blocking the loop or busy-waiting.
"""

import asyncio
import sys
import termios

from micropython import const

_VTIME = const(5)
_VMIN = const(6)
_SPEED_IN = const(4)
_SPEED_OUT = const(5)
_CC = const(6)
_STALE = bytearray(32)  # stale input is read into this and dropped


def open_serial(path, baud=None):
    """A raw, non-blocking serial line; `baud` is set on real adapters (a pty ignores it)."""
    f = open(path, "r+b", buffering=0)
    fd = f.fileno()
    termios.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[_CC][_VMIN] = 0
    attrs[_CC][_VTIME] = 0
    if baud is not None:
        speed = getattr(termios, "B%d" % baud, None)
        if speed is None:
            f.close()
            raise ValueError("baud %d is not available on the unix port" % baud)
        attrs[_SPEED_IN] = attrs[_SPEED_OUT] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return f


class SerialPort:
    """A serial line for the Modbus master: a pty, or a USB-RS485 adapter that switches
    direction by itself (so there is no DE pin to drive here)."""

    def __init__(self, path, baud=None):
        self.file = open_serial(path, baud)

    def readinto(self, buf):
        return self.file.readinto(buf)

    async def send(self, frame):
        sent = 0
        while sent < len(frame):
            n = self.file.write(frame[sent:] if sent else frame)
            if n:
                sent += n
            else:  # the line's buffer is full: let it drain
                await asyncio.sleep_ms(1)

    def drain_input(self):
        while self.file.readinto(_STALE):
            pass


class FilePin:
    """The unix port's stand-in for an input pin: active while the file exists.

    A bench presses the virtual E-stop by creating the file. (Real pins live in mcu.py.)
    """

    def __init__(self, path):
        self.path = path

    def value(self):
        import os

        try:
            os.stat(self.path)
        except OSError:
            return 1  # pulled up: not pressed
        return 0  # pressed: active low, like the boards' E-stop


class NoWatchdog:
    """The unix port has no hardware watchdog; a bench supervises the process instead."""

    def feed(self):
        pass


class UnixHal:
    """The unix port's wiring from a board file: devices by path (DESIGN section 3)."""

    def __init__(self, spec, root="."):
        self.spec = spec
        self.profiles = root + "/profiles"

    def rs485(self, name="modbus"):
        wiring = self.spec[name]
        return SerialPort(wiring["device"], wiring.get("termios_baud"))

    def link_stream(self):
        """An asyncio stream on the link's serial device, or None when the board has none."""
        device = self.spec.get("link", {}).get("device")
        if device is None:
            return None
        return asyncio.StreamReader(open_serial(device))

    def reset(self):
        """The unix port cannot reset itself: exit status 3 asks the bench (or
        `pilectl.unixboard`'s boot loop) to start the firmware again."""
        sys.exit(3)

    def watchdog(self, timeout_ms):
        return NoWatchdog()

    def service_mode(self, wdt):
        """Nothing to keep fed: the unix port has no hardware watchdog."""

    def wifi(self):
        return None  # the host's own network

    def output(self, name):
        return None  # no contactor or LED on a PC

    def estop(self):
        from pile.debounce import Debounced

        path = self.spec.get("estop_file")
        return None if path is None else Debounced(FilePin(path), active_low=True)
