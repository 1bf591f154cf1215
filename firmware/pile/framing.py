"""Host link framing: COBS(message || crc16 little-endian) || 0x00, DESIGN section 5.

A bad frame (COBS error, CRC mismatch, longer than 512 bytes before COBS) is
counted and dropped; the deframer resynchronises on the next 0x00, so a line
glitch costs one message, never the stream.
"""

from micropython import const

from pile import cobs
from pile.crc import crc16

MAX_FRAME = const(512)  # message + CRC, before COBS
_MAX_ENCODED = const(515)  # MAX_FRAME plus one COBS code byte per 254 data bytes, rounded up


class FrameError(ValueError):
    pass


def frame(message):
    """The wire bytes for one message."""
    n = len(message)
    if n + 2 > MAX_FRAME:
        raise FrameError("message is %d bytes, at most %d" % (n, MAX_FRAME - 2))
    body = bytearray(n + 2)
    body[:n] = message
    crc = crc16(message)
    body[n] = crc & 0xFF
    body[n + 1] = crc >> 8
    out = bytearray(cobs.encoded_size(n + 2) + 1)
    m = cobs.encode_into(body, n + 2, out)
    return bytes(memoryview(out)[:m + 1])  # out[m] is already the delimiter, 0


class Deframer:
    """Splits a byte stream into checked messages and counts what it drops."""

    def __init__(self):
        self._raw = None  # also decoded in place: one buffer a connection, at its first byte
        self._n = 0
        self._overflow = False
        self.frames = 0  # good frames handed on
        self.bad_crc = 0
        self.malformed = 0  # COBS errors and frames too short to hold a CRC
        self.too_long = 0

    def feed(self, data, on_message):
        """Consume `data`; call `on_message(bytes)` for every good frame in it."""
        raw = self._raw
        if raw is None:
            raw = self._raw = bytearray(_MAX_ENCODED)
        limit = len(raw)
        i = 0
        end = len(data)
        while i < end:
            zero = data.find(b"\x00", i)  # the delimiter, found in C rather than a byte loop
            stop = end if zero < 0 else zero
            if stop > i:
                n = self._n
                take = min(stop - i, limit - n)
                if take:
                    raw[n:n + take] = data[i:i + take]
                    self._n = n + take
                if take < stop - i:
                    self._overflow = True
            if zero < 0:
                return
            i = zero + 1
            if self._overflow:
                self.too_long += 1
                self._n = 0
                self._overflow = False
            elif self._n:
                message = self._check()
                self._n = 0
                if message is not None:
                    self.frames += 1
                    on_message(message)

    def _check(self):
        body = self._raw
        m = cobs.decode(body, self._n, body, MAX_FRAME)
        if m < 3:
            self.malformed += 1
            return None
        if crc16(body, 0, m - 2) != body[m - 2] | body[m - 1] << 8:
            self.bad_crc += 1
            return None
        return bytes(body[: m - 2])

    def dropped(self):
        return self.bad_crc + self.malformed + self.too_long
