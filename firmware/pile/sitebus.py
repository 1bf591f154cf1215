"""A site group's wired transport: a second RS485 bus, multi-drop (docs/site-group.md).

Every pile of the group is on one pair, the site bus (the board file's `site.bus`: a
UART, its pins and DE pin on a board, a device on the unix port; `hal.rs485("site.bus")`),
which is not the converter's: the leader is its master. Half-duplex, so one talks at a time: the
leader asks one member, waits for its reply (or `REPLY_MS`), then asks the next; a member
answers only what is asked of it (the HELLO naming it, the SITE_ALLOWANCE for its pile
id), and never talks unasked, so no two piles drive the line at once. The frames are the
host link's (pile/framing.py: COBS(message || crc16) || 0x00), each message signed as on
UDP; a member hears every other member's replies too, and drops them unread.
"""

import asyncio

from micropython import const

from pile.clock import ticks_diff, ticks_ms
from pile.framing import Deframer, frame
from pile.sitelink import SiteLink

_POLL_MS = const(2)  # a bus is read more often than a socket: the leader waits on each reply
REPLY_MS = const(100)  # what the leader waits for one member's reply
_READ = const(128)  # bytes read at once


class SiteBus(SiteLink):
    def __init__(self, pile, step, site, line):
        """`line` is the HAL's RS485 line (`readinto`, `start_send`, `sent`,
        `drain_input`)."""
        super().__init__(pile, step, site)
        self.line = line
        self.deframer = Deframer()
        self.unanswered = 0  # the leader's: polls no reply came to within REPLY_MS
        self._buf = bytearray(_READ)
        self._got = []

    def diagnostics(self):
        found = super().diagnostics()
        found["site_bus_dropped"] = self.deframer.dropped()
        found["site_bus_unanswered"] = self.unanswered
        return found

    async def run(self):
        if self.site["role"] == "leader":
            await self.lead({pile_id: pile_id for pile_id in self.site["members"]
                             if pile_id != self.pile.pile_id})
        else:
            await self._answer()

    async def _write(self, data):
        """One framed message onto the line, the line released once it has left."""
        line = self.line
        wire_ms = line.start_send(memoryview(frame(data)))
        if wire_ms:
            await asyncio.sleep_ms(wire_ms)
        while not line.sent():
            await asyncio.sleep_ms(1)

    def _read(self):
        """Feed what came to the deframer; the messages it completed, oldest first."""
        got = self._got
        n = self.line.readinto(self._buf)
        if n:
            self.deframer.feed(self._buf[:n], got.append)
        if not got:
            return ()
        self._got = []
        return got

    async def exchange(self, messages):
        """Ask each member in turn and hand its reply to the leader before the next."""
        for peer, data in messages:
            self.line.drain_input()  # a late reply to the poll before
            self._got = []
            await self._write(data)
            started_at = ticks_ms()
            while not self._took_reply(data, peer):
                if ticks_diff(ticks_ms(), started_at) >= REPLY_MS:
                    self.unanswered += 1
                    break
                await asyncio.sleep_ms(_POLL_MS)

    def _took_reply(self, sent, peer):
        """Whether the reply of `peer` to `sent` came (and went to the leader): the first
        frame that is not `sent` heard back (a transceiver whose receiver stays on while
        it drives the pair hears its own frames)."""
        for data in self._read():
            if data != sent:
                self.received += 1
                self.leader.received(data, peer)
                return True
        return False

    async def _answer(self):
        while True:
            got = self._read()
            if not got:
                await asyncio.sleep_ms(_POLL_MS)
                continue
            for data in got:
                reply = self.answer(data, addressed=True)
                if reply is not None:
                    await self._write(reply)
