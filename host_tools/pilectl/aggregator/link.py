"""One pile's link as the aggregator holds it: connected, kept, read, written to.

The protocol is pilectl/session.py's, as for every host tool; what this adds is what
one aggregator holding thousands needs: no request/reply pairing and no task a pile
(setpoints go out without waiting; TCP bytes come in through a protocol callback), and
what comes back (TELEMETRY, ACK, ERROR, HELLO) is kept as the pile's latest state for
the next dispatch. A lost connection is opened again after 1, 2, 4 ... 10 s (each wait
drawn between half and all of it, pile/backoff.py's rule, so a restarted aggregator's
piles are not all dialled at once); on every HELLO the session goes on above the pile's
seqs, so an aggregator restart is never refused as a replay, and a signed CONFIG_GET of
no keys goes out at once: a pile sends TELEMETRY on TCP only once a request was accepted.

A rollout (rollout.py) also sends field-update requests on the link, one at a time,
each answered by an UPDATE_STATUS (or an ERROR naming its seq): `update_request` returns
a future for that reply. Those that install firmware are signed by a session holding
the pile's technician's key, never the link key.
"""

import asyncio
import os
import time

from pile.surface import Backoff

from pilectl import wire
from pilectl.aggregator.recent import Recent
from pilectl.client import open_serial
from pilectl.session import BeforeHello, PileError, Session

_FIRST_RETRY_MS = 1000
_MAX_RETRY_MS = 10000


class LinkLost(ConnectionError):
    """The connection ended before the pile answered."""


class PileLink:
    def __init__(self, entry, counters):
        self.entry = entry
        self.session = Session(entry.key, pile_id=entry.pile_id)
        self.counters = counters  # shared by the fleet: frames verified, refused, ...
        self.telemetry = None  # the latest TELEMETRY fields, by wire number
        self.heard_at = None  # monotonic time of the latest TELEMETRY
        self.sent_w = None  # the last setpoint sent, when, and its seq
        self.sent_at = None
        self.sent_seq = None
        self.acked_seq = 0
        self.acked_at = None
        self.connects = 0
        self.recent = Recent()  # samples and events for the live page's detail
        self.config = {}  # config values the pile's CONFIG replies said, by key, this boot
        self.on_config = None  # called with the link when a CONFIG reply came
        self._writer = None
        self._deframer = None  # a new one each connection
        self._wrap = wire.frame  # what carries a message: a frame on a stream
        # (seq, future, signed with the technician's key) of the update request awaiting
        # its reply
        self._update = None

    @property
    def hello(self):
        return self.session.hello

    @property
    def connected(self):
        return self._writer is not None and self.session.greeted

    @property
    def attached(self):
        """Given a way to write to the pile (a connection, or a broker's publisher)."""
        return self._writer is not None

    async def run(self):
        """Keep the link open for ever."""
        backoff = Backoff(_FIRST_RETRY_MS, _MAX_RETRY_MS)
        while True:
            try:
                ended = await self._open()
                backoff.reset()
                await ended
            except (OSError, wire.WireError):
                self.counters["link_errors"] += 1
            finally:  # cancelled too: the pile sees the connection end
                self._drop()
            await asyncio.sleep(backoff.next_ms(os.urandom(1)[0]) / 1000)

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
        # a serial line has no connect event: ask for the HELLO, after a delimiter
        self._writer.write(b"\x00" + wire.frame(self.session.ask_hello()))
        return self._read(reader)

    def _drop(self):
        if self._writer is not None:
            self._writer.close()
            if self.session.greeted:
                self.recent.event("link lost")
        self._writer = None
        self.session.restart()
        self._answer(exception=LinkLost(f"the link to {self.entry.pile_id} ended"))

    async def _read(self, reader):
        while True:
            data = await reader.read(4096)
            if not data:
                return
            self.feed(data)

    def feed(self, data):
        """Bytes from the pile: every whole frame in them taken in. WireError for a
        message that is not the pile's protocol, or not this pile's: on a stream from the
        pile that means the connection is of no use."""
        for message in self._deframer.feed(data):
            self._receive(message)
        self.counters["frames_dropped"] += self._deframer.dropped
        self._deframer.dropped = 0

    def _receive(self, data):
        """Take one message in; False for one that came before the HELLO (set aside),
        WireError for one that is not a good message of this pile."""
        try:
            fields = self.session.receive(data)
        except BeforeHello:
            return False
        self.counters["frames_verified"] += 1
        kind = fields[wire.TYPE]
        if kind == wire.HELLO:
            self._hello()
        elif kind == wire.TELEMETRY:
            self.telemetry = fields
            self.heard_at = time.monotonic()
            self.recent.telemetry(self.heard_at, fields, self.sent_w)
        elif kind == wire.ACK:
            self.acked_seq = fields.get(wire.ACK_SEQ, self.acked_seq)
            self.acked_at = time.monotonic()
        elif kind == wire.CONFIG:
            self.config.update(fields.get(wire.BODY) or {})
            if self.on_config is not None:
                self.on_config(self)
        elif kind == wire.UPDATE_STATUS:
            self._answer(fields)
        elif kind == wire.ERROR:
            self.counters["refused"] += 1
            self.recent.refused_at = time.monotonic()
            code = fields.get(wire.ERROR_CODE)
            self.recent.event(f"refused ({wire.ERRORS.get(code, f'error {code}')}): "
                              f"{fields.get(wire.ERROR_DETAIL, '')}")
            if self._update is not None and self._refuses_update(fields):
                self._answer(exception=PileError(fields.get(wire.ERROR_CODE),
                                                 fields.get(wire.ERROR_DETAIL, "")))
        return True

    def update_request(self, mtype, fields, signer=None):
        """Send one field-update request and return a future for its UPDATE_STATUS
        fields (PileError when the pile refuses it, LinkLost when the link ends first).
        `signer` is a Session holding the pile's technician's key, for the requests that
        install firmware; UPDATE_GET goes under the link key. One at a time: a request
        sent while another awaits its reply replaces it."""
        if not self.connected:
            raise LinkLost(f"{self.entry.pile_id} is not connected")
        if signer is not None:  # under this connection's nonce, above every seq seen
            signer.hello, signer.nonce = self.session.hello, self.session.nonce
            signer.resume(self.session.hello)
        message = (signer or self.session).request(mtype, fields)
        self._answer(exception=LinkLost("a newer update request took its place"))
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_seen)  # a reply nobody waits for any more is no error
        self._update = ((signer or self.session).seq, future, signer is not None)
        if not self._write(message):
            self._answer(exception=LinkLost(f"the link to {self.entry.pile_id} closed"))
        return future

    def _refuses_update(self, error):
        """The ERROR answers the awaited update request: it names its seq, or it is the
        pile's refusal of a MAC it could not verify (seq 0, since nothing of the message
        can be trusted) while that request went under the technician's key: the only
        key on this link the pile may not know."""
        seq, technician = self._update[0], self._update[2]
        found = error.get(wire.ERROR_SEQ)
        return found == seq or (technician and found == 0 and
                                error.get(wire.ERROR_CODE) == wire.ERR_AUTH)

    def _answer(self, fields=None, exception=None):
        """The awaited update request's reply, or why none will come."""
        if self._update is None:
            return
        future = self._update[1]
        self._update = None
        if future.done():
            return
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(fields)

    def request(self, mtype, fields):
        """Send one request signed with the link key now, without waiting for its reply
        (a CONFIG reply lands in `config`, an ERROR is counted); False when not
        connected."""
        return self.connected and self._write(self.session.request(mtype, fields))

    def _hello(self):
        firmware = self.hello.get(wire.HELLO_FIRMWARE)
        self.recent.event(f"HELLO: firmware {firmware}" + (
            "" if self.recent.firmware in (None, firmware) else
            f" (was {self.recent.firmware})"))
        self.recent.firmware = firmware
        self.config = {}  # a new boot: what it said before may have changed
        self.telemetry = self.heard_at = None  # in the split again with its next TELEMETRY,
        self.sent_w = None  # which a pile sends once a request of ours is accepted:
        self._write(self.session.request(wire.CONFIG_GET, {wire.BODY: []}))  # the cheapest
        self.connects += 1

    def setpoint(self, power_w, ttl_s):
        """Send a signed SETPOINT now (no wait for its ACK); False when not connected."""
        if not self.connected:
            return False
        self._write(self.session.setpoint(power_w, ttl_s))
        self.sent_w, self.sent_at, self.sent_seq = power_w, time.monotonic(), self.session.seq
        self.counters["setpoints_sent"] += 1
        return True

    def _write(self, message):
        """Send `message`; False when the connection had closed under us (uvloop raises
        where asyncio's own transport only warns; the reader sees the end and drops it)."""
        if self._writer is None:  # on a broker, heard before its status said online
            return False
        try:
            self._writer.write(self._wrap(message))
        except RuntimeError:
            return False
        return True

    def attach(self, publisher):
        """On a broker (pilectl/aggregator/brokerlink.py): messages go out through `publisher`
        as they are, MQTT framing them; None detaches. The pile is asked for its HELLO,
        as on a serial line, since the broker tells no one that it connected."""
        self._drop()
        self._writer = publisher
        if publisher is not None:
            self._wrap = bytes
            publisher.write(self.session.ask_hello())

    def receive(self, message):
        """One whole message from the pile (a broker's PUBLISH); False when it was not
        what it should be (counted)."""
        try:
            return self._receive(message)
        except wire.WireError:  # on a broker, one message is dropped, not the link
            self.counters["link_errors"] += 1
            return False


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


def _seen(future):
    if not future.cancelled():
        future.exception()
