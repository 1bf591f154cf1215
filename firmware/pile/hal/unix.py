"""The unix port's hardware: serial devices (ptys, USB adapters) opened as raw lines.

DESIGN section 3: open unbuffered, make the line raw, then VMIN = VTIME = 0 so
an asyncio stream awaits data without blocking the loop or busy-waiting.
"""

import asyncio
import termios

from micropython import const

_VTIME = const(5)
_VMIN = const(6)
_SPEED_IN = const(4)
_SPEED_OUT = const(5)
_CC = const(6)


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
        while self.file.read(256):
            pass
