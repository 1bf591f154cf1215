"""One connection of the host link: a stream, its deframer, its Session and its outbox.

The serial line and each TCP client are a `Connection`; the broker link's is a subclass
(pile/mqttlink.py) that overrides how messages come in (`read_messages`) and go out
(`wrap`), and shares the rest: the serve loop, the outbox and its writer task, and the
request budget.
"""

import asyncio

from micropython import const

from pile.clock import ticks_diff, ticks_ms
from pile.framing import Deframer, frame

_OUTBOX = const(4)  # frames waiting to go out, per connection
_IDLE_MS = const(50)  # a hung-up serial line is polled this often
_BULK_BYTES = const(256)  # a longer message is bulk (an update chunk): it waits past a tick
_QUIET_MS = const(60)  # ...due within twice its longest recent handling (this at most),
# so that handling it never holds the tick back: 10 to 60 ms on an RP2040, under 1 on a PC


class Connection:
    """One stream (the UART, or one TCP client) with its own deframer, Session and outbox.

    Replies and telemetry wait in a small outbox that a writer task of the connection
    drains, so a host that never reads stalls nothing but its own replies: when the
    outbox is full, telemetry is dropped first (it is only ever the latest), then
    replies, all counted. Requests are handled at most `requests_per_s` a second (0: no
    limit), with a yield after each, so a flood never delays the control loop; a bulk
    message (longer than `_BULK_BYTES`: an update chunk, some 10 ms of work on an RP2040)
    due to be handled so close to a control tick that handling it could hold the tick
    back (twice the longest recent one's time, forgotten a millisecond a message,
    `_QUIET_MS` at most) waits until the tick has begun.
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
        self.admitted = False  # counted among the authenticated clients (pile/admission.py)
        self.on_admitted = None  # called once its first request is accepted under a key
        self._inbox = []
        self._ready = asyncio.Event()
        self._rate = requests_per_s
        self._tokens = requests_per_s
        self._refilled_at = self.opened_at
        self._bulk_ms = _QUIET_MS  # twice the longest recent bulk message's handling, ms

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
            bulk = len(message) > _BULK_BYTES
            if bulk:
                await self._past_tick()
            if self._admit():
                started = ticks_ms()
                self.send(self.session.handle(message))
                if bulk:
                    took = 2 * ticks_diff(ticks_ms(), started) + 1
                    self._bulk_ms = min(_QUIET_MS, max(took, self._bulk_ms - 1))
                if not self.admitted and self.session.verified:
                    self.admitted = True
                    if self.on_admitted is not None:
                        self.on_admitted(self)
                if inbox:  # between two messages, the control loop goes first if due
                    await asyncio.sleep_ms(0)  # (after the last, the reader's wait yields)
        return True

    async def _past_tick(self):
        """Wait until a control tick due before a bulk message could be handled (if one
        is) has begun."""
        left = self.session.pile.tick_in()
        if left is not None and left < self._bulk_ms:  # (overdue: the tick goes first)
            await asyncio.sleep_ms(max(0, left + 1))

    async def read_messages(self, lasting):
        """Wait for the stream's next bytes and put the messages in them into the inbox;
        False once the stream has ended. A `lasting` line (the serial link) outlives a
        hang-up: it waits and reads on. The one hook a transport overrides."""
        try:
            data = await self.reader.read(256)
        except OSError:  # reset by the peer, or closed by `Link.close`
            return False
        if data:
            self.deframer.feed(data, self._inbox.append)
        elif lasting:
            await asyncio.sleep_ms(_IDLE_MS)
        else:
            return False  # EOF: the TCP client left
        return True

    async def serve(self, still_allowed=None, lasting=False):
        """Greet, then answer every message until the stream ends (`read_messages`) or
        `still_allowed()` turns False."""
        writer = asyncio.create_task(self.write_out())
        self.send(self.session.hello())
        try:
            while not self.closed:
                if not await self.read_messages(lasting):
                    return
                if not await self.answer(still_allowed):
                    return
        finally:
            self.closed = True
            writer.cancel()
