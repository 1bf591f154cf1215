"""Modbus RTU master: functions 3, 4, 6, 16 and 23 over a half-duplex serial port.

The port gives `readinto(buf)` (non-blocking: the bytes waiting, or None; it must not
wait for more, as a MicroPython UART's `timeout_char` does), `start_send(frame)` (raises
the RS485 direction pin and starts the frame; returns the ms it takes on the wire),
`sent()` (True once the frame has left, the pin lowered) and `drain_input()` (drops
stale bytes). Buffers are allocated once; a reply is scanned for at
every offset, so noise ahead of it costs nothing but the noise. Exception
replies raise DeviceException with their code and are not retried; silence,
CRC errors and malformed replies are retried `retries` times, then raised.
"""

import asyncio

from micropython import const

from pile.clock import ticks_diff, ticks_ms
from pile.crc import TABLE, crc16

READ_HOLDING = const(3)
READ_INPUT = const(4)
WRITE_SINGLE = const(6)
WRITE_MULTIPLE = const(16)
READ_WRITE = const(23)

_MAX_ADU = const(256)
_EXCEPTION_BIT = const(0x80)
_BITS_PER_CHAR = const(11)  # start, 8 data, parity or second stop, stop
_MIN_IDLE_MS = const(20)  # USB adapters deliver in bursts up to ~16 ms apart
_REPLY_MARGIN_MS = const(50)  # the device's own turnaround, on top of the wire time
_MORE = const(32)  # bytes taken a look, once a reply has begun
_POLL_MS = const(1)  # under a character time at 9600 baud; the loop runs between polls
# A reply is looked for once its bytes can have arrived: each look is a round of the event
# loop, about 0.1 ms of an RP2040's core, and a 1 ms poll made 30 of them a transaction.


class ModbusError(Exception):
    pass


class Timeout(ModbusError):
    """Nothing came back."""


class BadReply(ModbusError):
    """Bytes came back, but no valid reply to this request among them."""


class DeviceException(ModbusError):
    """The device answered with an exception code (1 illegal function, 2 address, ...)."""

    def __init__(self, function, code):
        super().__init__("function %d: exception code %d" % (function, code))
        self.function = function
        self.code = code


def gap_us(baud):
    """The inter-frame gap t3.5: 3.5 character times, fixed at 1750 us above 19200 baud."""
    if baud > 19200:
        return 1750
    return 3500 * _BITS_PER_CHAR * 1000 // baud


def wire_us(nbytes, baud):
    return nbytes * _BITS_PER_CHAR * 1000000 // baud


def reply_length(frame, start, n, function):
    """Total length of the reply starting at frame[start] (n bytes held), 0 while unknown."""
    if n - start < 2:
        return 0
    if frame[start + 1] == function | _EXCEPTION_BIT:
        return 5
    if function in (WRITE_SINGLE, WRITE_MULTIPLE):
        return 8
    if n - start < 3:
        return 0
    return 5 + frame[start + 2]


def append_crc(buf, n):
    crc = crc16(buf, 0, n)
    buf[n] = crc & 0xFF
    buf[n + 1] = crc >> 8
    return n + 2


class Master:
    def __init__(self, port, baud, retries=2, timeout_ms=None):
        self.port = port
        self.baud = baud
        self.retries = retries
        self._gap_us = gap_us(baud)
        self.gap_ms = (self._gap_us + 999) // 1000
        self._quiet_at = ticks_ms()  # when the line last fell silent
        self.timeout_ms = timeout_ms or wire_us(_MAX_ADU, baud) // 1000 + _REPLY_MARGIN_MS
        self._idle_ms = max(_MIN_IDLE_MS, 4 * self.gap_ms)
        self._tx = bytearray(_MAX_ADU)
        self._rx = bytearray(_MAX_ADU)
        self._rxv = memoryview(self._rx)
        self._txv = memoryview(self._tx)
        self._more = bytearray(_MORE)  # the rest of a reply that came in pieces
        self._morev = memoryview(self._more)
        self.busy = False  # a transaction is under way: the E-stop task's cut waits for it
        self.transactions = 0
        self.failures = 0  # transactions that raised
        self.timeouts = 0
        self.bad_replies = 0
        self.exceptions = 0
        self.bytes_out = 0
        self.bytes_in = 0

    # -- the five functions: each returns the transaction to await; the data come back as
    # -- a memoryview valid until the next transaction --------------------------------------

    def read_holding(self, unit, address, count):
        return self._transact(unit, READ_HOLDING, address, count)

    def read_input(self, unit, address, count):
        return self._transact(unit, READ_INPUT, address, count)

    def write_single(self, unit, address, value):
        return self._transact(unit, WRITE_SINGLE, address, value)

    def write_multiple(self, unit, address, data):
        """Write registers from `data`: big-endian bytes, two per register."""
        return self._transact(unit, WRITE_MULTIPLE, address, len(data) // 2, data)

    def read_write(self, unit, read_address, read_count, write_address, data):
        """Function 23: write `data` at write_address, then read read_count registers."""
        return self._transact(unit, READ_WRITE, read_address, read_count, data, write_address)

    # -- internals ------------------------------------------------------------------------

    async def _transact(self, unit, function, address, value, data=None, write_address=0):
        """One request and its reply, retried; the reply's data (reads) or None (writes).

        The one coroutine of a transaction, so a transaction allocates one generator
        rather than one per helper (docs/performance.md). One transaction at a time: the
        control task and the E-stop task share the bus, and the request is built only
        once the bus is this transaction's."""
        while self.busy:
            await asyncio.sleep_ms(_POLL_MS)
        self.busy = True
        try:
            self.transactions += 1
            n = self._build(unit, function, address, value, data, write_address)
            expect = 8 if function in (WRITE_SINGLE, WRITE_MULTIPLE) else 5 + 2 * value
            port = self.port
            error = None
            for _ in range(1 + self.retries):
                quiet = self.gap_ms - ticks_diff(ticks_ms(), self._quiet_at)
                if quiet > 0:  # the line has not been silent for t3.5 since the last frame
                    await asyncio.sleep_ms(quiet)
                port.drain_input()
                wait = port.start_send(self._txv[:n])
                while True:  # until the frame has left
                    await asyncio.sleep_ms(wait)
                    if port.sent():
                        break
                    wait = _POLL_MS
                self.bytes_out += n
                # the reply: looked for once the rest of it can have come, else every ms
                got = 0
                heard = started = ticks_ms()
                while True:
                    more = self._take(got)
                    now = ticks_ms()
                    if more:
                        got += more
                        self.bytes_in += more
                        heard = now
                        start = _find_reply(self._rx, got, unit, function, TABLE)
                        if start >= 0:
                            break
                    paused = got and ticks_diff(now, heard) >= self._idle_ms
                    if got == _MAX_ADU or ticks_diff(now, started) >= self.timeout_ms or (
                            paused and not _begun(self._rx, got, unit, function)):
                        start = -1
                        error = self._unanswered(got)
                        break
                    # a reply begins t3.5 after the request at the earliest
                    await asyncio.sleep_ms(self._idle_ms if paused else max(_POLL_MS, (
                        wire_us(expect - got, self.baud) + (0 if got else self._gap_us)) // 1000))
                self._quiet_at = heard  # the next request waits for t3.5 after this
                if start >= 0:
                    return self._result(start, function, address, value)
            self._fail(error)
        finally:
            self.busy = False

    def _build(self, unit, function, address, value, data, write_address):
        """The request in tx; its length with the CRC."""
        tx = self._tx
        tx[0] = unit
        tx[1] = function
        tx[2] = address >> 8
        tx[3] = address & 0xFF
        tx[4] = value >> 8
        tx[5] = value & 0xFF
        n = 6
        if function == READ_WRITE:
            count = len(data) // 2
            tx[6] = write_address >> 8
            tx[7] = write_address & 0xFF
            tx[8] = count >> 8
            tx[9] = count & 0xFF
            n = 10
        if data is not None:
            tx[n] = len(data)
            tx[n + 1:n + 1 + len(data)] = data
            n += 1 + len(data)
        return append_crc(tx, n)

    def _take(self, n):
        """Bytes that have come after the first `n`, appended to rx without a slice (a view
        allocates): the first straight into rx, the rest through `more`."""
        if n == 0:
            return self.port.readinto(self._rxv) or 0
        got = self.port.readinto(self._morev) if n < _MAX_ADU else 0
        if got:
            got = min(got, _MAX_ADU - n)
            _append(self._rx, n, self._more, got)
        return got

    def _result(self, start, function, address, value):
        """The checked reply at rx[start]: a read's data, None for a write."""
        rx = self._rx
        if rx[start + 1] & _EXCEPTION_BIT:
            self.exceptions += 1
            self.failures += 1
            raise DeviceException(function, rx[start + 2])
        if function in (WRITE_SINGLE, WRITE_MULTIPLE):
            tx = self._tx
            for i in range(2, 6):
                if rx[start + i] != tx[i]:
                    self._fail(BadReply("write of register %d not echoed" % address
                                        if function == WRITE_SINGLE else
                                        "write of registers %d+%d not confirmed" % (address,
                                                                                    value)))
            return None
        if rx[start + 2] != 2 * value:
            self._fail(BadReply("asked for %d registers, got %d bytes" % (value, rx[start + 2])))
        return self._rxv[start + 3:start + 3 + 2 * value]

    def _fail(self, error):
        self.failures += 1
        if isinstance(error, Timeout):
            self.timeouts += 1
        elif isinstance(error, BadReply):
            self.bad_replies += 1
        raise error

    def _unanswered(self, n):
        """Why no reply was found in rx[:n]."""
        if n == 0:
            return Timeout("no reply within %d ms" % self.timeout_ms)
        rx = self._rx
        if n >= 4 and crc16(rx, 0, n - 2) == rx[n - 2] | rx[n - 1] << 8:
            return BadReply("reply from unit %d, function %d" % (rx[0], rx[1]))
        return BadReply("%d bytes, no valid reply (CRC error or noise)" % n)


def _begun(rx, n, unit, function):
    """True while a reply from `unit` to `function` may be under way in rx[:n]: its
    rest is waited for up to the timeout. Bytes can pause mid-frame on their way (a USB
    adapter's latency timer, a loaded bench host); only noise ends at the idle time."""
    for start in range(n):
        if rx[start] == unit and (start == n - 1 or rx[start + 1] & 0x7F == function):
            return True
    return False


def find_reply_bytecode(rx, n, unit, function, table):
    """pile.native.find_reply, interpreted (`table` is its CRC table, unused here)."""
    for start in range(n - 1):
        if rx[start] != unit or rx[start + 1] & 0x7F != function:
            continue
        length = reply_length(rx, start, n, function)
        if length < 5 or start + length > n:
            continue
        end = start + length - 2
        if crc16(rx, start, end) == rx[end] | rx[end + 1] << 8:
            return start
    return -1


def append_bytecode(dst, at, src, n):
    """pile.native.append, interpreted."""
    for i in range(n):
        dst[at + i] = src[i]


try:
    from pile.native import append as _append
    from pile.native import find_reply as _find_reply
except (ImportError, SyntaxError, ValueError):  # no native code here: see pile/native.py
    _append = append_bytecode
    _find_reply = find_reply_bytecode
