"""The pile's broker link: protocol-v1 messages as MQTT payloads (docs/protocol.md, MQTT).

A pile behind a site router dials out to a broker; aggregators reach it there. Three
topics a pile: `<prefix>/<pile_id>/down` (requests, subscribed at QoS 0), `.../up` (every
message from the pile, QoS 0) and `.../status` (retained: `online` on connect, `offline`
as the last will). Payloads are the messages as they are, signed: MQTT frames them, so
no COBS or CRC. The session is clean, and a retained message on the down topic is
dropped unanswered, so nothing a broker held ever reaches the controller: a setpoint's
ttl counts from when the pile got it, from a live aggregator. Lost connections are
opened again after 1, 2, 4 ... 30 s, each wait drawn between half and all of it
(pile/backoff.py), so a broker restart is not met by every pile at once. With a `ca_file`
the connection is TLS, and the broker's certificate must be signed by that CA and name
`tls_hostname`. Each broker connection is one of the pile's `Link` while it lasts: the
board's builder (pile/firmware.py, `build_link`) hands the link its `MqttLink`.
"""

import asyncio
import os

from micropython import const

from pile import mqtt
from pile.backoff import Backoff
from pile.clock import ticks_diff, ticks_ms
from pile.connection import Connection
from pile.protocol import Session

_FIRST_BACKOFF_MS = const(1000)
_MAX_BACKOFF_MS = const(30000)
_HANDSHAKE_MS = const(10000)  # TCP connect, CONNACK and SUBACK within this
_SUBSCRIPTION = const(1)  # the packet id of the one SUBSCRIBE
MAX_PACKET = const(640)  # the largest packet taken: MAX_FRAME and 128 bytes of topic and head
ONLINE = b"online"
OFFLINE = b"offline"


def topics(prefix, pile_id):
    """(up, down, status) for one pile."""
    base = "%s/%s/" % (prefix, pile_id)
    return base + "up", base + "down", base + "status"


class MqttConnection(Connection):
    """One broker connection: requests come in as PUBLISHes to the down topic, and every
    message goes out as a PUBLISH to the up topic, through the outbox and writer task of
    any connection (so a broker that stops reading stalls nothing but this link)."""

    def __init__(self, reader, writer, session, up, down, requests_per_s):
        super().__init__(reader, writer, session, "mqtt", requests_per_s)
        self.up = up
        self.down = down.encode()  # as topics come in
        self.broker_heard_at = self.opened_at
        self.retained_dropped = 0  # held by the broker: never answered
        self.oversized = 0

    def wrap(self, message):
        return mqtt.publish_packet(self.up, message)

    def dropped_in(self):
        return self.retained_dropped + self.oversized

    async def read_messages(self, lasting):
        """The broker's next packet: a request on the down topic goes into the inbox. The
        end of the connection raises (MqttError, OSError), for `MqttLink` to count."""
        first, body = await mqtt.read_packet(self.reader, MAX_PACKET)
        self.broker_heard_at = ticks_ms()
        if first & 0xF0 != mqtt.PUBLISH:
            return True  # PINGRESP: heard is all it says
        if body is None:
            self.oversized += 1
            return True
        topic, payload, retained = mqtt.split_publish(first, body)
        if retained:
            self.retained_dropped += 1
        elif topic == self.down and payload:  # empty: a retained one cleared
            self._inbox.append(payload)
        return True


class MqttLink:
    """Keeps the pile on its broker for ever (`run`), beside the serial link and TCP; each
    broker connection is one of `link`'s while it lasts (`Link.adopt`, `Link.close`)."""

    def __init__(self, link, settings):
        self.link = link
        pile = link.pile
        self.host = settings["host"]
        self.port = settings.get("port", 1883)
        self.user = settings.get("user", pile.pile_id)
        self.password = settings.get("password")
        self.keepalive_s = settings.get("keepalive_s", 10)
        self.ca_file = settings.get("ca_file")  # TLS, verifying the broker against this CA
        self.tls_hostname = settings.get("tls_hostname", self.host)
        self.up, self.down, self.status = topics(settings.get("topic_prefix", "v2g"),
                                                 pile.pile_id)
        self.connects = 0
        self.failures = 0
        self.problem = None  # why the last attempt failed, said once until it changes
        self.backoff = Backoff(_FIRST_BACKOFF_MS, _MAX_BACKOFF_MS)

    async def run(self):
        link = self.link
        while True:
            while not link.remote_allowed():  # no key yet, or no longer
                await asyncio.sleep_ms(1000)
            try:
                await self._session()
            except Exception as exc:  # noqa: BLE001 (said and counted: the pile runs on)
                # OSError, a timeout, a runt packet's IndexError, the TLS layer's
                # ValueError for a broker its CA did not sign: whatever ends the broker
                # link must not end the control loop that runs beside it
                self._failed(exc)
            await asyncio.sleep_ms(self.backoff.next_ms(os.urandom(1)[0]))

    def _failed(self, exc):
        self.failures += 1
        problem = "MQTT broker %s:%d: %s %s" % (self.host, self.port, type(exc).__name__,
                                                 str(exc).strip())
        if problem != self.problem and self.link.on_refused is not None:
            self.link.on_refused(problem)
        self.problem = problem

    async def _session(self):
        reader, writer = await asyncio.wait_for_ms(self._handshake(), _HANDSHAKE_MS)
        link = self.link
        conn = MqttConnection(reader, writer, Session(link.pile), self.up, self.down,
                              link.requests_per_s)
        link.adopt(conn)
        self.connects += 1
        self.backoff.reset()
        self.problem = None
        watch = asyncio.create_task(self._keep_alive(conn))
        try:
            await conn.serve(link.remote_allowed)
        finally:
            watch.cancel()
            link.close(conn)

    def _tls(self):
        """The TLS context for a broker whose certificate this CA (DER) signed."""
        import ssl  # only boards that dial a broker over TLS pay for it

        with open(self.ca_file, "rb") as f:
            ca = f.read()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=ca)
        return context

    async def _handshake(self):
        if self.ca_file is None:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        else:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self._tls(), server_hostname=self.tls_hostname)
        try:
            writer.write(mqtt.connect_packet(self.link.pile.pile_id, self.keepalive_s, self.user,
                                             self.password, (self.status, OFFLINE)))
            await writer.drain()
            mqtt.check_connack(*await mqtt.read_packet(reader, 4))
            writer.write(mqtt.subscribe_packet(_SUBSCRIPTION, self.down))
            await writer.drain()
            mqtt.check_suback(*await mqtt.read_packet(reader, 8), _SUBSCRIPTION)
            writer.write(mqtt.publish_packet(self.status, ONLINE, retain=True))
        except BaseException:  # refused, timed out or cancelled: the socket goes with it
            writer.close()
            raise
        return reader, writer

    async def _keep_alive(self, conn):
        """PINGREQ every half keepalive; a broker silent for 1.5 keepalives is gone (a
        half-open connection looks alive to the pile's writes)."""
        half_ms = self.keepalive_s * 500
        while not conn.closed:
            await asyncio.sleep_ms(half_ms)
            if ticks_diff(ticks_ms(), conn.broker_heard_at) > 3 * half_ms:
                self.link.close(conn)
                return
            conn.queue(mqtt.PINGREQ)

    def diagnostics(self):
        return {"mqtt_connects": self.connects, "mqtt_failures": self.failures}
