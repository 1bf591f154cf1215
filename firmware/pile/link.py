"""The pile's host link: every open connection, and the serving of serial, TCP and a broker.

`Link` holds the set of connections (`open`, `adopt`, `close`), serves the serial line
and TCP, runs the broker link its builder hands it (pile/firmware.py, `build_link`), and
sends TELEMETRY to its connections (a TCP client once it authenticated); its counters
(`diagnostics`) include the closed connections'. What it is made of, one job a module:
- pile/framing.py: COBS and CRC framing, and the deframer;
- pile/connection.py: one connection, its Session, outbox and request budget;
- pile/admission.py: which TCP clients stay (the policy, as pure functions);
- pile/mqttlink.py: the broker link (only on boards whose board file names a broker).
"""

import asyncio

from micropython import const

from pile import admission
from pile.cbor import dumps
from pile.clock import ticks_diff, ticks_ms
from pile.connection import Connection
from pile.framing import frame
from pile.protocol import ERR_BUSY, ERROR, Session

_WATCH_MS = const(1000)
_STUCK_MS = const(2000)  # a serial write unfinished by then is hung (512 B at 9600 baud: 0.5 s)
_REQUESTS_PER_S = const(20)  # per connection; a board spends ~5-10 ms on a signed request
_KEY_POLL_MS = const(1000)
_NEEDS_KEY = ("the TCP link needs a link key: provision one over USB serial, "
              'or set "insecure": true in the board file')
_TOO_MANY = "too many TCP connections: close one, or wait a few seconds"


class Link:
    """Every open connection of the pile: the serial line, TCP clients, and a broker.

    `serial` is a (reader, writer) pair of asyncio streams, or None; `tcp_port` None
    serves no TCP; `broker` is set by the builder to a pile.mqttlink.MqttLink when the
    board file names a broker, and is served with the rest. `on_refused(reason)` hears
    once why TCP waits (no key and not `insecure`), and why the broker did not take the
    pile. Which TCP clients stay is pile/admission.py's policy: at most two
    authenticated (the aggregator and a technician), the rest closed when they do not
    authenticate in time, fall silent, or a newer client needs their socket. So idle,
    slow or half-open connections never lock an aggregator out.
    """

    def __init__(self, pile, serial=None, tcp_port=None, tcp_host="0.0.0.0", insecure=False,
                 on_refused=None, requests_per_s=_REQUESTS_PER_S):
        self.pile = pile
        self.serial = serial
        self.tcp_port = tcp_port
        self.tcp_host = tcp_host
        self.insecure = insecure
        self.on_refused = on_refused
        self.requests_per_s = requests_per_s
        self.connections = []
        self.tcp_server = None  # once listening
        self.serial_conn = None  # once served
        self.broker = None  # a pile.mqttlink.MqttLink, on a board that dials a broker
        self.tcp_refused = 0
        self.tcp_closed_idle = 0  # closed for not authenticating, or for silence
        self.send_failures = 0
        self._closed = [0, 0, 0, 0]  # dropped in, refused, dropped out, shed: closed conns

    def remote_allowed(self):
        """TCP and the broker carry requests only when they can be signed, or on a bench."""
        return self.pile.key is not None or self.insecure

    def up(self):
        """Every transport the board has is serving: the serial line, TCP listening and
        the broker connected once (both only once a key allows them)."""
        waiting = not self.remote_allowed()
        return ((self.serial is None or self.serial_conn is not None)
                and (self.tcp_port is None or self.tcp_server is not None or waiting)
                and (self.broker is None or self.broker.connects > 0 or waiting))

    def servers(self):
        """The coroutines that serve this link's transports, for the firmware to run."""
        found = []
        if self.serial is not None:
            found.append(self.serve_serial(*self.serial))
        if self.tcp_port is not None:
            found.append(self.run_tcp())
        if self.broker is not None:
            found.append(self.broker.run())
        return found

    def open(self, reader, writer, name, may_provision=False):
        """A new connection on this link, counted among `connections` until closed."""
        return self.adopt(Connection(reader, writer, Session(self.pile, may_provision), name,
                                     self.requests_per_s))

    def adopt(self, conn):
        """Count `conn`, made by a transport of its own (the broker link's), among
        `connections` until `close(conn)`: it gets TELEMETRY and is in the counters."""
        self.connections.append(conn)
        return conn

    def close(self, conn):
        """Close `conn` and keep its counters among the closed connections'."""
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
            if admission.overdue(conn, now):
                self.tcp_closed_idle += 1
                self.close(conn)

    def _make_room(self, conn):
        """After `conn` authenticated: the authenticated client it displaces goes."""
        gone = admission.closed_for_admitted(self._tcp(), conn)
        if gone is not None:
            self.tcp_closed_idle += 1
            self.close(gone)

    async def _tcp_client(self, reader, writer):
        gone = admission.closed_for_new(self._tcp())
        if gone is not None:
            self.close(gone)
        if admission.full(self._tcp()) or not self.remote_allowed():
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
        """TELEMETRY to the serial line, the broker and every authenticated TCP client."""
        for conn in self.connections:
            if conn.admitted or conn.name != "tcp":  # the broker's ACL and MACs guard MQTT
                conn.send(conn.session.telemetry(), droppable=True)

    async def run_telemetry(self, check_in=None, mid_period=None):
        """TELEMETRY to every connection each `telemetry_period_s`; `check_in()` every
        second tells the supervisor this task still runs, however long the period.

        With a control loop, `mid_period` is its event set after each mid-period watch:
        a TELEMETRY due waits for it, so building and signing one (7 ms on an RP2040)
        runs well away from either tick. On its own timer it came just before every
        fourth tick of 250 ms and held it back, and as each tick is timed from when the
        last began, the two stayed in step (docs/pico.md); nor does it take the quarter
        after a tick, where a field update's flash slices start (pile/update.py)."""
        waited = 0
        while True:
            await asyncio.sleep_ms(_WATCH_MS)
            waited += _WATCH_MS
            if waited >= self.pile.cfg.telemetry_period_s * 1000:
                waited = 0
                if mid_period is not None:
                    mid_period.clear()
                    await mid_period.wait()
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
