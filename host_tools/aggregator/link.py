"""One pile's link as the aggregator holds it: connected, kept, read, written to.

Leaner than `pilectl.client.Client` (no request/reply pairing, no keepalive task, the
Mac0 computed directly, aggregator/mac0.py), because one aggregator holds thousands:
setpoints go out without waiting, and what comes back (TELEMETRY, ACK, ERROR, HELLO) is
kept as the pile's latest state for the next dispatch. A lost connection is opened again
after 1, 2, 4 ... 10 s; on every HELLO the seq goes on above the pile's key 8, so an
aggregator restart is never refused as a replay, and a signed CONFIG_GET of no keys
goes out at once: a pile sends TELEMETRY on TCP only once a request was accepted.
"""

import asyncio
import time

from pilectl import wire
from pilectl.client import open_serial

from aggregator import cborhead, mac0

_RETRY_S = (1, 2, 4, 8, 10)


class PileLink:
    def __init__(self, entry, counters):
        self.entry = entry
        self.kid = wire.key_id(entry.key)
        self.counters = counters  # shared by the fleet: frames verified, refused, ...
        self.telemetry = None  # the latest TELEMETRY fields, by wire number
        self.heard_at = None  # monotonic time of the latest TELEMETRY
        self.hello = None
        self.sent_w = None  # the last setpoint sent, when, and its seq
        self.sent_at = None
        self.sent_seq = None
        self.acked_seq = 0
        self.acked_at = None
        self.connects = 0
        self._seq = 0
        self._writer = None
        self._nonce = None
        self._deframer = None  # a new one each connection
        self._wrap = wire.frame  # what carries a message: a frame on a stream

    @property
    def connected(self):
        return self._writer is not None and self._nonce is not None

    @property
    def attached(self):
        """Given a way to write to the pile (a connection, or a broker's publisher)."""
        return self._writer is not None

    async def run(self):
        """Keep the link open for ever."""
        attempt = 0
        while True:
            try:
                ended = await self._open()
                attempt = 0
                await ended
            except (OSError, wire.WireError):
                self.counters["link_errors"] += 1
            finally:  # cancelled too: the pile sees the connection end
                self._drop()
            await asyncio.sleep(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])
            attempt += 1

    async def _open(self):
        """Connect; return what to await until the connection ends."""
        entry = self.entry
        self._deframer = wire.Deframer()
        if entry.tcp is not None:
            loop = asyncio.get_running_loop()
            ended = loop.create_future()
            await loop.create_connection(lambda: _Tcp(self, ended), *entry.tcp)
            return ended
        reader, self._writer = await open_serial(entry.serial)
        self._writer.write(b"\x00" + wire.frame(wire.encode({wire.TYPE: wire.HELLO,
                                                              wire.SEQ: 0})))
        return self._read(reader)  # a serial line has no connect event: ask for the HELLO

    def _drop(self):
        if self._writer is not None:
            self._writer.close()
        self._writer = self._nonce = None

    async def _read(self, reader):
        while True:
            data = await reader.read(4096)
            if not data:
                return
            self.feed(data)

    def feed(self, data):
        """Bytes from the pile: every whole frame in them taken in."""
        for message in self._deframer.feed(data):
            self._receive(message)
        self.counters["frames_dropped"] += self._deframer.dropped
        self._deframer.dropped = 0

    def _receive(self, data):
        fields = None
        if self._nonce is not None:
            try:
                fields = wire.decode(mac0.verify(self.entry.key, data, self._nonce))
            except wire.WireError:
                fields = None  # a pile that booted again says HELLO under its new nonce
        if fields is None:
            fields = self._new_hello(data)
            if fields is None:
                return
        self.counters["frames_verified"] += 1
        kind = fields[wire.TYPE]
        if kind == wire.HELLO:
            self._hello(fields)
        elif kind == wire.TELEMETRY:
            self.telemetry = fields
            self.heard_at = time.monotonic()
        elif kind == wire.ACK:
            self.acked_seq = fields.get(wire.ACK_SEQ, self.acked_seq)
            self.acked_at = time.monotonic()
        elif kind == wire.ERROR:
            self.counters["refused"] += 1

    def _new_hello(self, data):
        """A HELLO verified under the nonce it carries; None for anything else before the
        first HELLO, WireError for anything else after it (the MAC did not verify)."""
        fields = wire.decode(mac0.payload(data) if wire.is_signed(data) else data)
        if fields.get(wire.TYPE) != wire.HELLO:
            if self._nonce is None:
                return None
            raise wire.WireError(f"{self.entry.pile_id}: a message that fails its MAC")
        nonce = fields.get(wire.HELLO_NONCE)
        if not isinstance(nonce, bytes):
            raise wire.WireError(f"{self.entry.pile_id}: a HELLO without its nonce")
        return wire.decode(mac0.verify(self.entry.key, data, nonce))

    def _hello(self, fields):
        if fields.get(wire.HELLO_PILE_ID) != self.entry.pile_id:
            raise wire.WireError(f"{self.entry.pile_id}: the pile says it is "
                                 f"{fields.get(wire.HELLO_PILE_ID)!r}")
        self.hello = fields
        self._nonce = fields[wire.HELLO_NONCE]
        self._seq = max(self._seq, fields.get(wire.HELLO_NEXT_SEQ, 0) - 1)
        self.telemetry = self.heard_at = None  # in the split again with its next TELEMETRY,
        self.sent_w = None  # which a pile sends once a request of ours is accepted:
        self._send({wire.TYPE: wire.CONFIG_GET, wire.BODY: []})  # the cheapest, at once
        self.connects += 1

    def setpoint(self, power_w, ttl_s):
        """Send a signed SETPOINT now (no wait for its ACK); False when not connected."""
        if not self.connected:
            return False
        self._seq += 1
        self._write(cborhead.setpoint(self._seq, power_w, ttl_s))
        self.sent_w, self.sent_at, self.sent_seq = power_w, time.monotonic(), self._seq
        self.counters["setpoints_sent"] += 1
        return True

    def _send(self, fields):
        self._seq += 1
        self._write(wire.encode({**fields, wire.SEQ: self._seq}))

    def _write(self, message):
        if self._writer is None:  # on a broker, heard before its status said online
            return
        self._writer.write(self._wrap(mac0.sign(self.entry.key, self.kid, message, self._nonce)))

    def attach(self, publisher):
        """On a broker (aggregator/brokerlink.py): messages go out through `publisher`
        as they are, MQTT framing them; None detaches. The pile is asked for its HELLO,
        as on a serial line, since the broker tells no one that it connected."""
        self._drop()
        self._writer = publisher
        if publisher is not None:
            self._wrap = bytes
            publisher.write(wire.encode({wire.TYPE: wire.HELLO, wire.SEQ: 0}))

    def receive(self, message):
        """One whole message from the pile (a broker's PUBLISH); False when it was not
        what it should be (counted)."""
        try:
            self._receive(message)
        except wire.WireError:
            self.counters["link_errors"] += 1
            return False
        return True


class _Tcp(asyncio.Protocol):
    """A TCP connection's bytes handed to its PileLink as they come: a callback, not a
    reader task a pile, since thousands of piles send every second."""

    def __init__(self, link, ended):
        self.link = link
        self.ended = ended

    def connection_made(self, transport):
        self.link._writer = transport  # before any data_received: the HELLO is answered

    def data_received(self, data):
        try:
            self.link.feed(data)
        except wire.WireError as exc:  # not the pile it should be, or a bad MAC: drop it
            if not self.ended.done():
                self.ended.set_exception(exc)

    def connection_lost(self, exc):
        if not self.ended.done():
            self.ended.set_result(None)
