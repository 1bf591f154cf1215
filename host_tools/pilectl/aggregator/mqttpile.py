"""An emulated pile's broker connection: the firmware's MQTT packets on an asyncio protocol.

What pile/mqttlink.py does on a board, for thousands of emulated piles in one process
(pilectl/aggregator/emulator.py --broker): CONNECT with the pile's own user and an `offline`
will, SUBSCRIBE to its down topic, `online` retained, HELLO, then every request answered
on the up topic and TELEMETRY every second. The packets are built by the firmware's own
`pile.mqtt`; a callback a connection instead of a reader task, as the emulator's TCP
piles. Retained requests are dropped; a lost connection is opened again after 1, 2, 4 ...
30 s, jittered; a reboot of the emulated pile (a field update's) drops the connection
and dials again under the new boot. No PINGREQ: TELEMETRY every second keeps the
connection alive for the broker, and the emulator faces brokers under test, not
half-open networks.
"""

import asyncio
import random

from pile import surface as fw

from pilectl.aggregator import hostcodec

_FIRST_BACKOFF_MS = 1000
_MAX_BACKOFF_MS = 30000
_BACKLOG = 4096  # bytes unsent above which TELEMETRY is dropped, as on TCP
_HANDSHAKE_S = 10.0  # connect to SUBACK: a broker that takes longer is dialled again


class BrokerPile(asyncio.Protocol):
    """One emulated pile's broker connection, dialled again whenever it is lost."""

    def __init__(self, emulated, broker, password, keepalive_s=10, prefix="v2g"):
        self.emulated = emulated
        self.broker = broker  # (host, port)
        self.password = password
        self.keepalive_s = keepalive_s
        self.up, self.down_topic, self.status = fw.topics(prefix, emulated.pile.pile_id)
        self.down = self.down_topic.encode()  # as topics come in
        self.session = None
        self.transport = None
        self.ready = False  # subscribed: requests and TELEMETRY flow
        self.frozen = False  # gone silent on purpose, its socket left open
        self._buffer = bytearray()
        self._backoff = fw.Backoff(_FIRST_BACKOFF_MS, _MAX_BACKOFF_MS)

    async def run(self, gate):
        """Dial for ever; `gate` (a semaphore shared by the emulator's piles) bounds the
        handshakes under way: thousands at once overflow the broker's listen backlog, and
        the kernel's SYN retries (1, 3, 7 ... s) then stretch a start to minutes. A
        handshake is given _HANDSHAKE_S: one that a broker never answers (no CONNACK or
        SUBACK) would hold its place for ever, and the pile would never come online."""
        loop = asyncio.get_running_loop()
        while True:
            lost = loop.create_future()
            self._lost = lost
            self._subscribed = loop.create_future()
            try:
                async with gate:
                    try:
                        async with asyncio.timeout(_HANDSHAKE_S):
                            await loop.create_connection(lambda: self, *self.broker)
                            await asyncio.wait([lost, self._subscribed],
                                               return_when=asyncio.FIRST_COMPLETED)
                    except TimeoutError:  # closed, so `lost` ends: dialled again below
                        if self.transport is not None:
                            self.transport.close()
                        elif not lost.done():
                            lost.set_result(None)
                await lost
            except OSError:
                pass  # refused or unreachable: dial again below
            if self.frozen:
                return
            await asyncio.sleep(self._backoff.next_ms(random.getrandbits(8)) / 1000)

    def connection_made(self, transport):
        self.transport = transport
        self._buffer.clear()
        pile = self.emulated.pile
        transport.write(fw.connect_packet(pile.pile_id, self.keepalive_s, pile.pile_id,
                                          self.password, (self.status, fw.OFFLINE)))

    def connection_lost(self, exc):
        self.transport = None
        self.ready = False
        if not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data):
        if self.frozen:
            return
        self._buffer += data
        try:
            for first, body in fw.split_packets(self._buffer, fw.MAX_PACKET):
                self._packet(first, body)
        except fw.MqttError:
            self.transport.close()

    def _packet(self, first, body):
        kind = first & 0xF0
        if kind == 0x20:  # CONNACK
            fw.check_connack(first, body)
            self.transport.write(fw.subscribe_packet(1, self.down_topic))
        elif kind == fw.SUBACK:
            fw.check_suback(first, body, 1)
            self.ready = True
            if not self._subscribed.done():
                self._subscribed.set_result(None)
            self._backoff.reset()
            self.session = fw.Session(self.emulated.pile, codec=hostcodec)
            self.transport.write(fw.publish_packet(self.status, fw.ONLINE, retain=True))
            self.send(self.session.hello())
        elif kind == fw.PUBLISH and body is not None and self.ready:
            topic, payload, retained = fw.split_publish(first, body)
            if topic == self.down and payload and not retained:
                self.send(self.session.handle(payload))
                self.emulated.after_request()

    def send(self, message, droppable=False):
        transport = self.transport
        if transport is None or self.frozen:
            return
        waiting = transport.get_write_buffer_size()
        if waiting and droppable or waiting > _BACKLOG:
            return
        transport.write(fw.publish_packet(self.up, message))

    def telemetry(self):
        if self.ready:
            self.send(self.session.telemetry(), droppable=True)

    def drop(self):
        """The pile resets: its connection ends without a DISCONNECT (the broker publishes
        its will), and it dials again after the first backoff, under its new boot."""
        self.ready = False
        if self.transport is not None:
            self.transport.abort()

    def freeze(self):
        """Go silent with the socket open, as a pile whose power or radio died: the
        broker notices only by the keepalive, then publishes the will."""
        self.frozen = True
