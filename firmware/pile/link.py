"""Host link framing: COBS(message || crc16 little-endian) || 0x00, DESIGN section 5.

A bad frame (COBS error, CRC mismatch, longer than 512 bytes before COBS) is
counted and dropped; the deframer resynchronises on the next 0x00, so a line
glitch costs one message, never the stream.
"""

import asyncio

from micropython import const

from pile import cobs
from pile.cbor import dumps
from pile.clock import ticks_diff, ticks_ms
from pile.crc import crc16
from pile.protocol import ERR_BUSY, ERROR, Session

MAX_FRAME = const(512)  # message + CRC, before COBS
_MAX_ENCODED = const(515)  # MAX_FRAME plus one COBS code byte per 254 data bytes, rounded up
_MAX_TCP_CLIENTS = const(2)  # authenticated: the aggregator and a technician
_MAX_TCP = const(4)  # TCP sockets in all, authenticated or not yet
_AUTH_MS = const(5000)  # a TCP client's first accepted request comes within this
_IDLE_TCP_MS = const(60000)  # a TCP client silent this long is gone (pilectl pings at 20 s)
_WATCH_MS = const(1000)
_STUCK_MS = const(2000)  # a serial write unfinished by then is hung (512 B at 9600 baud: 0.5 s)
_OUTBOX = const(4)  # frames waiting to go out, per connection
_REQUESTS_PER_S = const(20)  # per connection; a board spends ~5-10 ms on a signed request
_IDLE_MS = const(50)  # a hung-up serial line is polled this often
_KEY_POLL_MS = const(1000)
_NEEDS_KEY = ("the TCP link needs a link key: provision one over USB serial, "
              'or set "insecure": true in the board file')
_TOO_MANY = "too many TCP connections: close one, or wait a few seconds"


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


class Connection:
    """One stream (the UART, or one TCP client) with its own deframer, Session and outbox.

    Replies and telemetry wait in a small outbox that a writer task of the connection
    drains, so a host that never reads stalls nothing but its own replies: when the
    outbox is full, telemetry is dropped first (it is only ever the latest), then
    replies, all counted. Requests are handled at most `requests_per_s` a second (0: no
    limit), with a yield after each, so a flood never delays the control loop.
    """

    def __init__(self, reader, writer, session, name, requests_per_s=0):
        self.reader = reader
        self.writer = writer
        self.session = session
        self.name = name
        self.deframer = Deframer()
        self.outbox = []
        self.dropped_out = 0  # frames the outbox had no room for
        self.write_errors = 0
        self.shed = 0  # requests over the budget, dropped unanswered
        self.opened_at = self.heard_at = ticks_ms()
        self.closed = False
        self.writing_since = None  # ticks_ms when the write under way began
        self.admitted = False  # counted among the authenticated clients
        self.on_admitted = None  # called once its first request is accepted under a key
        self._inbox = []
        self._ready = asyncio.Event()
        self._rate = requests_per_s
        self._tokens = requests_per_s
        self._refilled_at = self.opened_at

    def send(self, message, droppable=False):
        """Queue one message; a `droppable` one (telemetry) only when nothing waits."""
        outbox = self.outbox
        if len(outbox) >= _OUTBOX or (droppable and outbox):
            self.dropped_out += 1
            return
        self.queue(self.wrap(message))

    def wrap(self, message):
        """The bytes that carry one message on this connection's stream."""
        return frame(message)

    def queue(self, data):
        """Bytes for the writer task, past the outbox's limit (the transport's own)."""
        self.outbox.append(data)
        self._ready.set()

    def dropped_in(self):
        """What came in and was dropped before it could be answered."""
        return self.deframer.dropped()

    async def write_out(self):
        """The connection's writer task: the outbox onto the stream, frame by frame. A
        write that fails (the peer is gone) ends it; the reader then sees the end too."""
        while not self.closed:
            if not self.outbox:
                self._ready.clear()
                await self._ready.wait()
            try:
                await self.flush()
            except OSError:
                self.write_errors += 1
                self.closed = True

    async def flush(self):
        """Write out what waits in the outbox, frame by frame."""
        outbox = self.outbox
        while outbox:
            self.writing_since = ticks_ms()
            self.writer.write(outbox.pop(0))
            await self.writer.drain()
            self.writing_since = None

    def _admit(self):
        """One request's worth of the budget, or False to shed it."""
        rate = self._rate
        if not rate:
            return True
        now = ticks_ms()
        earned = ticks_diff(now, self._refilled_at) * rate // 1000
        if earned:
            self._tokens = min(rate, self._tokens + earned)
            self._refilled_at = now
        if not self._tokens:
            self.shed += 1
            return False
        self._tokens -= 1
        return True

    async def receive(self, data, still_allowed=None):
        """Deframe `data` and answer every message in it while `still_allowed()` holds;
        return False once it does not (the TCP link lost its key)."""
        self.deframer.feed(data, self._inbox.append)
        return await self.answer(still_allowed)

    async def answer(self, still_allowed=None):
        """Answer every message waiting in the inbox (see `receive`)."""
        inbox = self._inbox
        while inbox:
            if still_allowed is not None and not still_allowed():
                inbox.clear()
                return False
            message = inbox.pop(0)
            self.heard_at = ticks_ms()
            if self._admit():
                self.send(self.session.handle(message))
                if not self.admitted and self.session.verified:
                    self.admitted = True
                    if self.on_admitted is not None:
                        self.on_admitted(self)
                if inbox:  # between two messages, the control loop goes first if due
                    await asyncio.sleep_ms(0)  # (after the last, the reader's wait yields)
        return True

    async def serve(self, still_allowed=None, lasting=False):
        """Greet, then answer every message until EOF or `still_allowed()` turns False.

        A `lasting` line (the serial link) outlives a hang-up: it waits and reads on.
        """
        writer = asyncio.create_task(self.write_out())
        self.send(self.session.hello())
        try:
            while not self.closed:
                try:
                    data = await self.reader.read(256)
                except OSError:  # reset by the peer, or closed by `Link.close`
                    return
                if data:
                    if not await self.receive(data, still_allowed):
                        return
                elif lasting:
                    await asyncio.sleep_ms(_IDLE_MS)
                else:
                    return  # EOF: the TCP client left
        finally:
            self.closed = True
            writer.cancel()


class Link:
    """Every open connection of the pile: the serial line, TCP clients, and a broker.

    `serial` is a (reader, writer) pair of asyncio streams, or None; `tcp_port` None
    serves no TCP; `mqtt` (the board file's part) dials a broker (pile/mqttlink.py).
    `on_refused(reason)` hears once why TCP waits (no key and not `insecure`), and why
    the broker did not take the pile. TCP keeps at most two authenticated clients (the
    aggregator and a technician) and `_MAX_TCP` sockets in all: a client that has not
    made one accepted request within `_AUTH_MS`, or says nothing for `_IDLE_TCP_MS`, is
    closed; a new connection over the cap closes the oldest unauthenticated one; one
    that authenticates while two others are, closes the one silent the longest. So idle,
    slow or half-open connections never lock an aggregator out.
    """

    def __init__(self, pile, serial=None, tcp_port=None, tcp_host="0.0.0.0", insecure=False,
                 on_refused=None, requests_per_s=_REQUESTS_PER_S, mqtt=None):
        self.pile = pile
        self.mqtt = mqtt  # the board file's "mqtt" part: dial out to that broker
        self.serial = serial
        self.tcp_port = tcp_port
        self.tcp_host = tcp_host
        self.insecure = insecure
        self.on_refused = on_refused
        self.requests_per_s = requests_per_s
        self.connections = []
        self.tcp_server = None  # once listening
        self.serial_conn = None  # once served
        self.broker = None  # a pile.mqttlink.MqttLink, once served
        self.tcp_refused = 0
        self.tcp_closed_idle = 0  # closed for not authenticating, or for silence
        self.send_failures = 0
        self._closed = [0, 0, 0, 0]  # dropped in, refused, dropped out, shed: closed conns

    def remote_allowed(self):
        """TCP and the broker carry requests only when they can be signed, or on a bench."""
        return self.pile.key is not None or self.insecure

    def servers(self):
        """The coroutines that serve this link's transports, for the firmware to run."""
        found = []
        if self.serial is not None:
            found.append(self.serve_serial(*self.serial))
        if self.tcp_port is not None:
            found.append(self.run_tcp())
        if self.mqtt is not None:
            from pile.mqttlink import MqttLink  # only boards that dial a broker pay for it

            self.broker = MqttLink(self, self.mqtt)
            found.append(self.broker.run())
        return found

    def open(self, reader, writer, name, may_provision=False):
        """A new connection on this link, counted among `connections` until closed."""
        conn = Connection(reader, writer, Session(self.pile, may_provision), name,
                          self.requests_per_s)
        self.connections.append(conn)
        return conn

    def close(self, conn):
        if conn in self.connections:
            self.connections.remove(conn)
            closed = self._closed
            closed[0] += conn.dropped_in()
            closed[1] += conn.session.refused()
            closed[2] += conn.dropped_out
            closed[3] += conn.shed
            self.send_failures += conn.write_errors
        if not conn.closed:
            conn.closed = True
            asyncio.create_task(_shut(conn.writer))

    async def serve_serial(self, reader, writer):
        """The wired link: always on, and the only one that may provision keys."""
        self.serial_conn = self.open(reader, writer, "serial", may_provision=True)
        await self.serial_conn.serve(lasting=True)

    async def watch_serial(self, check_in):
        """Call `check_in()` every second unless the serial line is stuck in a write (a
        UART that stopped sending): then the supervisor stops feeding the watchdog and the
        board resets. A TCP client that stops reading is no hang: its outbox drops frames
        and `_watch_tcp` closes it."""
        while True:
            await asyncio.sleep_ms(_WATCH_MS)
            conn = self.serial_conn
            since = None if conn is None else conn.writing_since
            if since is None or ticks_diff(ticks_ms(), since) < _STUCK_MS:
                check_in()

    async def run_tcp(self):
        """Serve TCP once it is allowed: with a link key, or on an insecure bench.

        Without a key the pile waits (the key may be provisioned over serial meanwhile),
        calling `on_refused(reason)` once so the refusal is seen, not silent. Then it
        watches its TCP clients for ever (see the class).
        """
        if not self.remote_allowed():
            if self.on_refused is not None:
                self.on_refused(_NEEDS_KEY)
            while not self.remote_allowed():
                await asyncio.sleep_ms(_KEY_POLL_MS)
        self.tcp_server = await asyncio.start_server(self._tcp_client, self.tcp_host,
                                                     self.tcp_port)
        while True:
            await asyncio.sleep_ms(_WATCH_MS)
            self._watch_tcp(ticks_ms())

    def _tcp(self):
        return [c for c in self.connections if c.name == "tcp"]

    def _watch_tcp(self, now):
        """Close TCP clients that never authenticated in time, or fell silent."""
        for conn in self._tcp():
            silent = ticks_diff(now, conn.heard_at)
            if not conn.admitted and ticks_diff(now, conn.opened_at) > _AUTH_MS \
                    or silent > _IDLE_TCP_MS:
                self.tcp_closed_idle += 1
                self.close(conn)

    def _make_room(self, conn):
        """After `conn` authenticated: at most two authenticated TCP clients stay."""
        verified = [c for c in self._tcp() if c.admitted and c is not conn]
        if len(verified) >= _MAX_TCP_CLIENTS:
            oldest = verified[0]
            for other in verified:
                if ticks_diff(oldest.heard_at, other.heard_at) > 0:
                    oldest = other
            self.tcp_closed_idle += 1
            self.close(oldest)

    async def _tcp_client(self, reader, writer):
        tcp = self._tcp()
        if len(tcp) >= _MAX_TCP:  # the oldest client that has not authenticated gives way
            waiting = [c for c in tcp if not c.admitted]
            if waiting:
                self.close(waiting[0])
        if len(self._tcp()) >= _MAX_TCP or not self.remote_allowed():
            self.tcp_refused += 1
            detail = _TOO_MANY if self.remote_allowed() else _NEEDS_KEY
            # Unsigned: a client cannot check a MAC before its HELLO, and this changes nothing.
            writer.write(frame(dumps({0: ERROR, 1: 1, 2: 0, 3: ERR_BUSY, 4: detail})))
            try:
                await writer.drain()
            except OSError:  # gone already: it was being sent away anyway
                self.send_failures += 1
            await _shut(writer)
            return
        conn = self.open(reader, writer, "tcp")
        conn.on_admitted = self._make_room
        try:
            await conn.serve(self.remote_allowed)
        finally:
            self.close(conn)

    def broadcast_telemetry(self):
        for conn in self.connections:
            if conn.admitted or conn.name != "tcp":  # the broker's ACL and MACs guard MQTT
                conn.send(conn.session.telemetry(), droppable=True)

    async def run_telemetry(self, check_in=None):
        """TELEMETRY to every connection each `telemetry_period_s`; `check_in()` every
        second tells the supervisor this task still runs, however long the period."""
        waited = 0
        while True:
            await asyncio.sleep_ms(_WATCH_MS)
            waited += _WATCH_MS
            if waited >= self.pile.cfg.telemetry_period_s * 1000:
                waited = 0
                self.broadcast_telemetry()
            if check_in is not None:
                check_in()

    def diagnostics(self):
        live = self.connections
        closed = self._closed
        found = {} if self.broker is None else self.broker.diagnostics()
        found.update({"link_connections": len(live), "tcp_refused": self.tcp_refused,
                "tcp_closed_idle": self.tcp_closed_idle,
                "link_send_failures": self.send_failures + sum(c.write_errors for c in live),
                "frames_dropped": closed[0] + sum(c.dropped_in() for c in live),
                "requests_refused": closed[1] + sum(c.session.refused() for c in live),
                "replies_dropped": closed[2] + sum(c.dropped_out for c in live),
                "requests_shed": closed[3] + sum(c.shed for c in live)})
        return found


async def _shut(writer):
    """Close a TCP client's socket (MicroPython closes it in `wait_closed`); the client's
    read then ends, and so does its serve task."""
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:  # the peer was gone already: closed is what was wanted
        return
