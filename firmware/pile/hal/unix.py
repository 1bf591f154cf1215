"""The unix port's hardware: serial devices (ptys, USB adapters) opened as raw lines.

DESIGN section 3: open unbuffered, make the line raw, then VMIN = VTIME = 0 so
an asyncio stream awaits data without blocking the loop or busy-waiting.
"""

import _thread
import asyncio
import os
import sys
import termios
import time

from micropython import const

from pile.events import RESET_POWER_ON

_VTIME = const(5)
_VMIN = const(6)
_SPEED_IN = const(4)
_SPEED_OUT = const(5)
_CC = const(6)
_STALE = bytearray(32)  # stale input is read into this and dropped
_LINE_QUEUE = const(8)  # frames waiting for the line's writer thread
_WATCHDOG_POLL_MS = const(100)
# The watchdog ends the process with SIGUSR2: exit status 140 in a shell, returncode
# -12 in Python's subprocess. A thread cannot exit a MicroPython process, and no other
# way out of the firmware ends with this status (3 is a requested reboot).
WATCHDOG_SIGNAL = "USR2"


def open_serial(path, baud=None):
    """A raw, non-blocking serial line; `baud` is set on real adapters (a pty ignores it)."""
    try:
        f = open(path, "r+b", buffering=0)
    except OSError as exc:
        raise OSError("cannot open serial device %s (%s)" % (path, exc))
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
        self._pending = None  # what the line has not taken yet of the frame being sent

    def readinto(self, buf):
        return self.file.readinto(buf)

    def start_send(self, frame):
        """Write what the line takes now; `sent()` writes the rest. The line paces itself,
        so no time on the wire is waited for."""
        self._pending = frame
        self.sent()
        return 0

    def sent(self):
        """True once all of the frame is written, else False: the line's buffer is full."""
        pending = self._pending
        if pending:
            n = self.file.write(pending)
            if n:
                self._pending = pending[n:] if n < len(pending) else None
        return not self._pending

    def drain_input(self):
        while self.file.readinto(_STALE):
            pass


class LineWriter:
    """Writes a serial line from a thread of its own, so that a peer that stops reading
    (a pty holds only so much, and a blocked write would stop the whole process) never
    stalls the firmware: like a UART, the line does not wait for its peer. What the
    queue has no room for is dropped and counted."""

    def __init__(self, file):
        self._file = file
        self._queue = []
        self._lock = _thread.allocate_lock()
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self.dropped = 0
        _thread.start_new_thread(self._run, ())

    def write(self, data):
        with self._lock:
            if len(self._queue) >= _LINE_QUEUE:
                self.dropped += 1
                return
            self._queue.append(bytes(data))
        if self._wake.locked():
            self._wake.release()

    async def drain(self):
        return None  # written by the thread; asyncio never waits on the line

    def close(self):
        return None  # the line stays open for the next host

    def _run(self):
        while True:
            self._wake.acquire()
            while True:
                with self._lock:
                    if not self._queue:
                        break
                    data = self._queue.pop(0)
                self._file.write(data)  # may block: only this thread waits


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


class UnixWatchdog:
    """A watchdog for the unix port: a thread of its own ends the process when `feed()`
    has not come for `timeout_ms`, after `on_expiry()` (which notes the cause for the next
    boot). Like a hardware watchdog it fires whatever the main thread is stuck in."""

    def __init__(self, timeout_ms, on_expiry=None):
        self.timeout_ms = timeout_ms
        self.armed = True
        self._on_expiry = on_expiry
        self._fed = time.ticks_ms()
        _thread.start_new_thread(self._run, ())

    def feed(self):
        self._fed = time.ticks_ms()

    def _run(self):
        while True:
            time.sleep_ms(_WATCHDOG_POLL_MS)
            if self.armed and time.ticks_diff(time.ticks_ms(), self._fed) > self.timeout_ms:
                break
        if self._on_expiry is not None:
            self._on_expiry()
        print("watchdog: not fed for %d ms, resetting" % self.timeout_ms)
        os.system("kill -%s $PPID" % WATCHDOG_SIGNAL)  # $PPID of the shell: this process


class UnixHal:
    """The unix port's wiring from a board file: devices by path (DESIGN section 3)."""

    def __init__(self, spec, root="."):
        self.spec = spec
        self.profiles = root + "/profiles"

    def rs485(self, name="modbus"):
        """The line of the board file's part `name`: "modbus", or "site.bus" (a site
        group's bus, a part within a part)."""
        wiring = self.spec
        for key in name.split("."):
            wiring = wiring[key]
        return SerialPort(wiring["device"], wiring.get("termios_baud"))

    def link_stream(self):
        """(reader, writer) on the link's serial device, or None when the board has none."""
        device = self.spec.get("link", {}).get("device")
        if device is None:
            return None
        line = open_serial(device)
        return asyncio.StreamReader(line), LineWriter(line)

    def reset(self):
        """The unix port cannot reset itself: exit status 3 asks the bench (or
        `pilectl.unixboard`'s boot loop) to start the firmware again."""
        sys.exit(3)

    def reset_cause(self):
        """A process always starts as from power-on; the pile notes a watchdog reset or a
        requested reboot on flash itself (Pile.note_reset)."""
        return RESET_POWER_ON

    def watchdog(self, timeout_ms, on_expiry=None):
        return UnixWatchdog(timeout_ms, on_expiry)

    def service_mode(self, wdt):
        """Stopped at the REPL: the watchdog is disarmed (unlike a chip's, it can be)."""
        wdt.armed = False

    def wifi(self):
        return None  # the host's own network

    def output(self, name):
        return None  # no contactor or LED on a PC

    def estop(self):
        """The E-stop stand-in: the file `estop_file` names is the pressed button, watched
        every few milliseconds as a pin interrupt would be."""
        from pile.estop import Estop

        path = self.spec.get("estop_file")
        return None if path is None else Estop(FilePin(path))
