"""Host link framing: COBS(message || crc16 little-endian) || 0x00, DESIGN section 5.

A bad frame (COBS error, CRC mismatch, longer than 512 bytes before COBS) is
counted and dropped; the deframer resynchronises on the next 0x00, so a line
glitch costs one message, never the stream.
"""

import asyncio

from micropython import const

from pile.cbor import dumps
from pile.crc import crc16
from pile.protocol import ERR_BUSY, ERROR, Session

MAX_FRAME = const(512)  # message + CRC, before COBS
_MAX_ENCODED = const(515)  # MAX_FRAME plus one COBS code byte per 254 data bytes, rounded up
_MAX_TCP_CLIENTS = const(2)  # the aggregator and a technician
_IDLE_MS = const(50)  # a hung-up serial line is polled this often
_KEY_POLL_MS = const(1000)
_NEEDS_KEY = ("the TCP link needs a link key: provision one over USB serial, "
              'or set "insecure": true in the board file')


class FrameError(ValueError):
    pass


def cobs_encode(data):
    out = bytearray(len(data) + len(data) // 254 + 1)
    code_at = 0  # where the current block's code byte goes
    code = 1
    n = 1
    for b in data:
        if code == 0xFF:  # the block is full: close it, open the next
            out[code_at] = code
            code_at = n
            n += 1
            code = 1
        if b:
            out[n] = b
            n += 1
            code += 1
        else:
            out[code_at] = code
            code_at = n
            n += 1
            code = 1
    out[code_at] = code
    return out[:n]


def cobs_decode(data, n, out, limit=None):
    """Decode data[:n] into `out` (which may be `data` itself: the output never overtakes
    the input); return the decoded length, or -1 when malformed or longer than `limit`."""
    if limit is None:
        limit = len(out)
    i = m = 0
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n or m + code - 1 > limit:
            return -1
        for j in range(i + 1, end):
            out[m] = data[j]
            m += 1
        i = end
        if code != 0xFF and i < n:
            if m == limit:
                return -1
            out[m] = 0
            m += 1
    return m


def frame(message):
    """The wire bytes for one message."""
    if len(message) + 2 > MAX_FRAME:
        raise FrameError("message is %d bytes, at most %d" % (len(message), MAX_FRAME - 2))
    body = bytearray(message)
    crc = crc16(message)
    body.append(crc & 0xFF)
    body.append(crc >> 8)
    encoded = cobs_encode(body)
    encoded.append(0)
    return bytes(encoded)


class Deframer:
    """Splits a byte stream into checked messages and counts what it drops."""

    def __init__(self):
        self._raw = bytearray(_MAX_ENCODED)  # also decoded in place: one buffer a connection
        self._n = 0
        self._overflow = False
        self.frames = 0  # good frames handed on
        self.bad_crc = 0
        self.malformed = 0  # COBS errors and frames too short to hold a CRC
        self.too_long = 0

    def feed(self, data, on_message):
        """Consume `data`; call `on_message(bytes)` for every good frame in it."""
        raw = self._raw
        limit = len(raw)
        for b in data:
            if b:
                if self._n < limit:
                    raw[self._n] = b
                    self._n += 1
                else:
                    self._overflow = True
            elif self._overflow:
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
        m = cobs_decode(body, self._n, body, MAX_FRAME)
        if m < 3:
            self.malformed += 1
            return None
        if crc16(body, 0, m - 2) != body[m - 2] | body[m - 1] << 8:
            self.bad_crc += 1
            return None
        return bytes(body[: m - 2])

    def dropped(self):
        return self.bad_crc + self.malformed + self.too_long


class Connection:
    """One stream (the UART, or one TCP client) with its own deframer and Session."""

    def __init__(self, reader, writer, session, name):
        self.reader = reader
        self.writer = writer
        self.session = session
        self.name = name
        self.deframer = Deframer()
        self._inbox = []

    async def send(self, message):
        self.writer.write(frame(message))
        await self.writer.drain()

    async def receive(self, data, still_allowed=None):
        """Deframe `data` and answer every message in it while `still_allowed()` holds;
        return False once it does not (the TCP link lost its key)."""
        inbox = self._inbox
        self.deframer.feed(data, inbox.append)
        while inbox:
            if still_allowed is not None and not still_allowed():
                inbox.clear()
                return False
            await self.send(self.session.handle(inbox.pop(0)))
        return True

    async def serve(self, still_allowed=None, lasting=False):
        """Greet, then answer every message until EOF or `still_allowed()` turns False.

        A `lasting` line (the serial link) outlives a hang-up: it waits and reads on.
        """
        await self.send(self.session.hello())
        while True:
            data = await self.reader.read(256)
            if data:
                if not await self.receive(data, still_allowed):
                    return
            elif lasting:
                await asyncio.sleep_ms(_IDLE_MS)
            else:
                return  # EOF: the TCP client left


class Link:
    """Every open connection of the pile: the serial line, and at most two TCP clients.

    `serial` is an asyncio stream (or None); `tcp_port` None serves no TCP.
    `on_refused(reason)` hears once why TCP waits (no key and not `insecure`).
    """

    def __init__(self, pile, serial=None, tcp_port=None, tcp_host="0.0.0.0", insecure=False,
                 on_refused=None):
        self.pile = pile
        self.serial = serial
        self.tcp_port = tcp_port
        self.tcp_host = tcp_host
        self.insecure = insecure
        self.on_refused = on_refused
        self.connections = []
        self.tcp_server = None  # once listening
        self.tcp_refused = 0
        self.send_failures = 0
        self._closed = [0, 0]  # frames dropped and requests refused by closed connections

    def tcp_allowed(self):
        return self.pile.key is not None or self.insecure

    def servers(self):
        """The coroutines that serve this link's transports, for the firmware to run."""
        found = []
        if self.serial is not None:
            found.append(self.serve_serial(self.serial, self.serial))
        if self.tcp_port is not None:
            found.append(self.run_tcp())
        return found

    def open(self, reader, writer, name, may_provision=False):
        """A new connection on this link, counted among `connections` until closed."""
        conn = Connection(reader, writer, Session(self.pile, may_provision), name)
        self.connections.append(conn)
        return conn

    def close(self, conn):
        self.connections.remove(conn)
        self._closed[0] += conn.deframer.dropped()
        self._closed[1] += conn.session.refused()

    async def serve_serial(self, reader, writer):
        """The wired link: always on, and the only one that may provision the key."""
        await self.open(reader, writer, "serial", may_provision=True).serve(lasting=True)

    async def run_tcp(self):
        """Serve TCP once it is allowed: with a link key, or on an insecure bench.

        Without a key the pile waits (the key may be provisioned over serial meanwhile),
        calling `on_refused(reason)` once so the refusal is seen, not silent.
        """
        if not self.tcp_allowed():
            if self.on_refused is not None:
                self.on_refused(_NEEDS_KEY)
            while not self.tcp_allowed():
                await asyncio.sleep_ms(_KEY_POLL_MS)
        self.tcp_server = await asyncio.start_server(self._tcp_client, self.tcp_host,
                                                     self.tcp_port)

    async def _tcp_client(self, reader, writer):
        tcp = [c for c in self.connections if c.name == "tcp"]
        try:
            if len(tcp) >= _MAX_TCP_CLIENTS or not self.tcp_allowed():
                self.tcp_refused += 1
                # Unsigned: a client cannot check a MAC before its HELLO, and this changes nothing.
                busy = {0: ERROR, 1: 1, 2: 0, 3: ERR_BUSY, 4: "at most 2 TCP clients at once"}
                writer.write(frame(dumps(busy)))
                await writer.drain()
                return
            conn = self.open(reader, writer, "tcp")
            try:
                await conn.serve(self.tcp_allowed)
            finally:
                self.close(conn)
        finally:
            writer.close()
            await writer.wait_closed()

    async def broadcast_telemetry(self):
        for conn in list(self.connections):
            try:
                await conn.send(conn.session.telemetry())
            except OSError:  # the peer vanished mid-write; its serve loop ends on EOF
                self.send_failures += 1

    async def run_telemetry(self, check_in=None):
        """TELEMETRY to every connection each `telemetry_period_s`; `check_in()` after each
        round tells the supervisor this task still runs."""
        while True:
            await asyncio.sleep_ms(self.pile.cfg.telemetry_period_s * 1000)
            await self.broadcast_telemetry()
            if check_in is not None:
                check_in()

    def diagnostics(self):
        live = self.connections
        return {"link_connections": len(live), "tcp_refused": self.tcp_refused,
                "link_send_failures": self.send_failures,
                "frames_dropped": self._closed[0] + sum(c.deframer.dropped() for c in live),
                "requests_refused": self._closed[1] + sum(c.session.refused() for c in live)}
