"""The async host client of the pile link, over TCP or a serial line.

What the CLI, the OCPP bridge and the benches use: connect, check HELLO, then send
requests and read their replies, while TELEMETRY is queued for `telemetry()`. The
protocol itself (HELLO and nonce, seq resume, signing for the role, verifying, reply
matching, paging) is pilectl/session.py's; this moves its bytes over asyncio streams.
One request is in flight at a time, so the next non-telemetry message is its reply.
"""

import asyncio

import serial

from pilectl import wire
from pilectl.session import KeyMismatch, PileError, Session, Unexpected

DEFAULT_TIMEOUT = 5.0
KEEPALIVE_S = 20.0  # a pile closes a TCP client silent for 60 s
_RECONNECT_S = 0.5  # between attempts to reach a pile that is rebooting

__all__ = ["Client", "KeyMismatch", "LinkError", "PileError", "open_serial"]


class LinkError(Exception):
    """The link itself failed: nothing answered, the stream closed, or the keys differ."""


class Client:
    def __init__(self, reader, writer, key=None, timeout=DEFAULT_TIMEOUT, keyring=None,
                 technician_key=None):
        """`key` is the pile's link key (it signs with it), `technician_key` the technician's:
        with it every request is the technician's (config, keys, release, reboot). A
        `keyring` (see pilectl.keys) finds both by the pile id in a signed HELLO."""
        self._reader = reader
        self._writer = writer
        self.session = Session(key, technician_key, keyring)
        self.timeout = timeout
        self.deframer = wire.Deframer()
        self._replies = asyncio.Queue()
        self._telemetry = asyncio.Queue(maxsize=100)
        self._lock = asyncio.Lock()
        self._task = None
        self._pinger = None
        self._sent_at = 0.0  # loop time of the last write
        self._reopen = None  # makes a new client on the same link (tcp, serial)

    # what the session knows, as the tools read it
    hello = property(lambda self: self.session.hello)
    nonce = property(lambda self: self.session.nonce)
    key = property(lambda self: self.session.key)
    technician_key = property(lambda self: self.session.technician_key)
    rejected = property(lambda self: self.session.rejected)
    last_rejection = property(lambda self: self.session.last_rejection)

    @property
    def seq(self):
        """The last seq used; a bench that builds its own messages moves it on."""
        return self.session.seq

    @seq.setter
    def seq(self, value):
        self.session.seq = value

    @classmethod
    async def tcp(cls, host, port, key=None, timeout=DEFAULT_TIMEOUT, keyring=None,
                  technician_key=None):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (TimeoutError, OSError) as exc:
            raise LinkError(f"cannot reach the pile at {host}:{port} ({exc}): is it on the "
                            "network and is the port right?") from exc
        client = await cls(reader, writer, key, timeout, keyring,
                           technician_key)._start(ask_hello=False)
        client._reopen = lambda: cls.tcp(host, port, key, timeout, keyring, technician_key)
        return client

    @classmethod
    async def serial(cls, path, key=None, baud=115200, timeout=DEFAULT_TIMEOUT, keyring=None,
                     technician_key=None):
        reader, writer = await open_serial(path, baud)
        client = await cls(reader, writer, key, timeout, keyring,
                           technician_key)._start(ask_hello=True)
        client._reopen = lambda: cls.serial(path, key, baud, timeout, keyring, technician_key)
        return client

    async def reconnect(self, within_s, new_boot=False):
        """This client closed and a new one on the same link and keys, once the pile
        answers again, trying for up to `within_s` seconds; with `new_boot`, only once
        the pile has rebooted (its HELLO's boot nonce is new)."""
        await self.close()
        old_nonce = self.nonce
        deadline = asyncio.get_running_loop().time() + within_s
        while True:
            try:
                client = await self._reopen()
                if not new_boot or client.nonce != old_nonce:
                    return client
                await client.close()  # still the boot that is about to end
            except (LinkError, OSError):
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise LinkError(f"the pile did not answer again within {within_s:g} s")
            await asyncio.sleep(_RECONNECT_S)

    @property
    def sent_at(self):
        """Loop time of the last write."""
        return self._sent_at

    async def _start(self, ask_hello):
        self._task = asyncio.create_task(self._receive())
        if ask_hello:  # a serial line has no connect: ask for the HELLO, after a delimiter
            self._writer.write(b"\x00")  # that ends whatever the last user left half-sent
            self._send(self.session.ask_hello())
        try:
            await self._reply(wire.HELLO)
        except LinkError:
            await self.close()
            raise
        protocol = self.hello.get(wire.HELLO_PROTOCOL)
        if protocol != wire.PROTOCOL_VERSION:
            await self.close()
            raise LinkError(f"the pile speaks protocol {protocol}, this tool speaks "
                            f"{wire.PROTOCOL_VERSION}")
        if not ask_hello:  # TCP: a pile closes a client that does not authenticate within
            try:           # seconds, or falls silent for a minute
                await self.config_get([])
            except (LinkError, PileError):
                await self.close()
                raise
            self._pinger = asyncio.create_task(self._keep_alive())
        return self

    async def _keep_alive(self):
        """A HELLO when nothing else was sent for a while: the pile keeps the connection."""
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            if asyncio.get_running_loop().time() - self._sent_at >= KEEPALIVE_S:
                async with self._lock:
                    self._send(self.session.ask_hello())
                    await self._writer.drain()

    async def _receive(self):
        while True:
            data = await self._reader.read(4096)
            if not data:
                await self._replies.put(None)
                return
            for message in self.deframer.feed(data):
                greeted = self.session.greeted
                try:
                    fields = self.session.receive(message)
                except KeyMismatch as exc:
                    if not greeted:
                        await self._replies.put(LinkError(str(exc)))  # no use waiting
                    continue
                except wire.WireError:
                    continue  # counted by the session
                if fields[wire.TYPE] == wire.TELEMETRY:
                    if self._telemetry.full():
                        self._telemetry.get_nowait()  # keep the newest
                    self._telemetry.put_nowait(fields)
                else:
                    await self._replies.put(fields)

    def _send(self, message):
        self._writer.write(wire.frame(message))
        self._sent_at = asyncio.get_running_loop().time()

    async def _reply(self, expected, seq=None):
        while True:
            try:
                fields = await asyncio.wait_for(self._replies.get(), self.timeout)
            except TimeoutError:
                hint = self.last_rejection
                raise LinkError(f"no reply from the pile within {self.timeout:g} s" + (
                    f"; last message refused: {hint}" if hint else
                    ": check the port, the cable and that the firmware runs")) from None
            if fields is None:
                raise LinkError("the pile closed the link")
            if isinstance(fields, LinkError):
                raise fields
            try:
                reply = Session.reply(fields, expected, seq)
            except Unexpected as exc:
                raise LinkError(str(exc)) from None
            if reply is not None:
                return reply

    async def request(self, mtype, fields, expected):
        """Send one request; return the reply's fields, or raise PileError/LinkError.

        A pile takes each seq once per key for the whole boot, so another tool with the
        same key may have used ours: on a replay refusal, ask for the next seq (HELLO) and
        retry once.
        """
        async with self._lock:
            for attempt in range(2):
                self._send(self.session.request(mtype, fields))
                await self._writer.drain()
                try:
                    return await self._reply(expected, self.session.seq)
                except PileError as exc:
                    if exc.code != wire.ERR_REPLAY or attempt:
                        raise
                self._send(self.session.ask_hello())
                await self._writer.drain()
                await self._reply(wire.HELLO)  # the session resumes above its next seq

    async def _paged(self, mtype, fields, expected):
        """Every page of a listing (CONFIG, DIAGNOSTICS): the bodies, merged."""
        reply = await self.request(mtype, fields, expected)
        found = dict(reply[wire.BODY])
        following = Session.next_page(fields, reply)
        while following is not None:
            mtype, fields = following
            reply = await self.request(mtype, fields, expected)
            found.update(reply[wire.BODY])
            following = Session.next_page(fields, reply)
        return found

    async def send_raw(self, data, frame=True):
        """Send `data` as it is (framed unless frame=False), waiting for no reply.

        For benches and fault finding: garbage, malformed, unsigned or replayed messages.
        """
        async with self._lock:
            await self._send_raw(data, frame)

    async def _send_raw(self, data, frame):
        self._writer.write(wire.frame(data) if frame else data)
        await self._writer.drain()

    async def exchange_raw(self, data, frame=True):
        """Send `data` as `send_raw` does and return the pile's next reply; an ERROR reply
        raises PileError like any other."""
        async with self._lock:
            await self._send_raw(data, frame)
            return await self._reply(None)

    def sign(self, fields):
        """The message bytes this client would send for `fields`: signed with the
        technician's key when it has one, else with the link key, else unsigned."""
        return self.session.sign(wire.encode(fields))

    async def setpoint(self, power_w, ttl_s, departure_s=None, reserve_soc=None, freq_mode=None,
                       freq_curve=None, freq_revert_s=None):
        """Ask for `power_w`; with `freq_mode` (wire.FREQ_DROOP, or wire.FREQ_CURVE and a
        `freq_curve` of [mHz, W] points) a frequency response rides on top of it."""
        fields = {wire.SETPOINT_POWER: power_w, wire.SETPOINT_TTL: ttl_s}
        optional = ((wire.SETPOINT_DEPARTURE, departure_s), (wire.SETPOINT_RESERVE, reserve_soc),
                    (wire.SETPOINT_FREQ_MODE, freq_mode), (wire.SETPOINT_FREQ_CURVE, freq_curve),
                    (wire.SETPOINT_FREQ_REVERT, freq_revert_s))
        fields.update((key, value) for key, value in optional if value is not None)
        return _ack(await self.request(wire.SETPOINT, fields, wire.ACK))

    async def config_get(self, keys=None):
        fields = {} if keys is None else {wire.BODY: list(keys)}
        return await self._paged(wire.CONFIG_GET, fields, wire.CONFIG)

    async def config_set(self, changes):
        return await self._paged(wire.CONFIG_SET, {wire.BODY: changes}, wire.CONFIG)

    async def provision_key(self, key, technician=False, site=False):
        """Set (bytes) or remove (None) the pile's link key, or the technician's, or with
        `site` a site group's; over the USB serial link only. The reply to a new link key
        proves it (signed with it); a new technician's key is proven by a request signed
        with it; the site key signs nothing a host could check."""
        name = wire.SITE_KEY if site else wire.TECHNICIAN_KEY if technician else wire.LINK_KEY
        session = self.session
        session.pending = (key,)  # the reply may come under the new key, a refusal under the old
        try:
            reply = await self.request(wire.CONFIG_SET, {wire.BODY: {name: key}}, wire.CONFIG)
        finally:
            session.pending = ()
        if technician:
            session.technician_key = key
            if key is not None:
                await self.config_get([])  # signed with the new key: refused unless it took
        return reply

    async def events(self, first=0):
        return (await self.request(wire.EVENTS_GET, {wire.BODY: first}, wire.EVENTS))[wire.BODY]

    async def diagnostics(self):
        """The firmware's counters (bus, devices, link, heap, flash), by name: every part
        the pile has."""
        return await self._paged(wire.DIAGNOSTICS_GET, {}, wire.DIAGNOSTICS)

    async def update_status(self):
        """Where a field update stands (UPDATE_STATUS fields, see pilectl.transfer)."""
        return await self.request(wire.UPDATE_GET, {}, wire.UPDATE_STATUS)

    async def command(self, name):
        return _ack(await self.request(wire.COMMAND, {wire.BODY: wire.COMMANDS[name]}, wire.ACK))

    async def telemetry(self):
        """The next TELEMETRY message, as a dict of field names."""
        try:
            fields = await asyncio.wait_for(self._telemetry.get(), self.timeout + 1)
        except TimeoutError:
            raise LinkError(f"no telemetry from the pile for {self.timeout + 1:g} s: is the "
                            "cable still plugged in and the firmware running?") from None
        return {name: fields.get(key) for key, name in wire.TELEMETRY_FIELDS.items()}

    async def close(self):
        for task in (self._task, self._pinger):
            if task is not None:
                task.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass  # the far end is already gone: closing is all we wanted


def _ack(ack):
    return {"target_w": ack[wire.ACK_TARGET], "reasons": ack[wire.ACK_REASONS]}


async def open_serial(path, baud=115200):
    """asyncio streams over a pyserial port (a pty, or a USB adapter)."""
    try:
        port = serial.Serial(path, baud, timeout=0)
    except serial.SerialException as exc:
        raise LinkError(f"cannot open {path}: {exc}. Is the cable plugged in and the "
                        "port right (ls /dev/ttyUSB* /dev/ttyACM*)?") from exc
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()

    def readable():
        try:
            data = port.read(max(port.in_waiting, 1))
        except (serial.SerialException, OSError):  # the far end hung up
            loop.remove_reader(port.fileno())
            reader.feed_eof()
            return
        if data:
            reader.feed_data(data)

    loop.add_reader(port.fileno(), readable)
    return reader, _SerialWriter(port, loop)


class _SerialWriter:
    """The part of asyncio.StreamWriter the client uses, over a pyserial port."""

    def __init__(self, port, loop):
        self._port = port
        self._loop = loop

    def write(self, data):
        self._port.write(data)

    async def drain(self):
        await self._loop.run_in_executor(None, self._port.flush)

    def close(self):
        if self._port.is_open:
            self._loop.remove_reader(self._port.fileno())
            self._port.close()

    async def wait_closed(self):
        return None
